package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/explodefs/explodefs/test/cluster"
)

// TestDiscoveryFollowsCRDs checks the wrapper's part of /apis: a group
// shows up once its CRD is established and leaves with its last CRD,
// while the server's own group stays.
func TestDiscoveryFollowsCRDs(t *testing.T) {
	c := cluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	crd := map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "widgets.example.test"},
		"spec": map[string]any{
			"group": "example.test",
			"scope": "Cluster",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{
				map[string]any{"name": "v1beta1", "served": true, "storage": false, "schema": anyObject()},
				map[string]any{"name": "v1", "served": true, "storage": true, "schema": anyObject()},
			},
		},
	}
	if err := c.Do(ctx, http.MethodPost, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, nil); err != nil {
		t.Fatal(err)
	}
	err := eventually(ctx, func() error {
		g, ok := groups(ctx, c)["example.test"]
		if !ok {
			return fmt.Errorf("example.test not listed")
		}
		if g.PreferredVersion.Version != "v1" || len(g.Versions) != 2 {
			return fmt.Errorf("example.test listed as %+v, want v1 preferred of v1 and v1beta1", g)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, http.MethodDelete, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.test", nil, nil); err != nil {
		t.Fatal(err)
	}
	err = eventually(ctx, func() error {
		listed := groups(ctx, c)
		if _, ok := listed["example.test"]; ok {
			return fmt.Errorf("example.test still listed")
		}
		for _, keep := range []string{"apiextensions.k8s.io", cluster.Group} {
			if _, ok := listed[keep]; !ok {
				return fmt.Errorf("%s no longer listed", keep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type apiGroup struct {
	Name     string `json:"name"`
	Versions []struct {
		Version string `json:"version"`
	} `json:"versions"`
	PreferredVersion struct {
		Version string `json:"version"`
	} `json:"preferredVersion"`
}

func groups(ctx context.Context, c *cluster.Cluster) map[string]apiGroup {
	var list struct {
		Groups []apiGroup `json:"groups"`
	}
	if err := c.Do(ctx, http.MethodGet, "/apis", nil, &list); err != nil {
		return nil
	}
	out := map[string]apiGroup{}
	for _, g := range list.Groups {
		out[g.Name] = g
	}
	return out
}

func anyObject() map[string]any {
	return map[string]any{"openAPIV3Schema": map[string]any{
		"type": "object", "x-kubernetes-preserve-unknown-fields": true,
	}}
}

// eventually retries check every 50 ms until it passes or ctx ends.
func eventually(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
