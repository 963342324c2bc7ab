package cluster

import (
	"context"
	"fmt"
	"net/http"
)

// Group and Version are the API group and version the CRDs serve, as
// OpenShift does.
const (
	Group   = "image.openshift.io"
	Version = "v1"
)

// crdsPath is where CustomResourceDefinitions are created.
const crdsPath = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

// crd describes a custom resource whose schema accepts any object:
// OpenShift's types are not ours to restate, and the tests must be able to
// write whatever a real cluster holds.
func crd(plural, singular, kind, scope string, shortNames []string, status bool) map[string]any {
	version := map[string]any{
		"name":    Version,
		"served":  true,
		"storage": true,
		"schema": map[string]any{"openAPIV3Schema": map[string]any{
			"type":                                 "object",
			"x-kubernetes-preserve-unknown-fields": true,
		}},
	}
	if status {
		// With the status subresource, a write of the main resource keeps
		// the old status and status is written only through /status, as
		// OpenShift's registry does.
		version["subresources"] = map[string]any{"status": map[string]any{}}
	}
	return map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": plural + "." + Group},
		"spec": map[string]any{
			"group": Group,
			"scope": scope,
			"names": map[string]any{
				"plural":     plural,
				"singular":   singular,
				"kind":       kind,
				"listKind":   kind + "List",
				"shortNames": shortNames,
			},
			"versions": []any{version},
		},
	}
}

// installCRDs creates the ImageStream (namespaced, with status) and Image
// (cluster-scoped) CRDs and waits until both are established and
// ImageStreams are served.
func (c *Cluster) installCRDs(ctx context.Context) error {
	crds := []map[string]any{
		crd("imagestreams", "imagestream", "ImageStream", "Namespaced", []string{"is"}, true),
		crd("images", "image", "Image", "Cluster", nil, false),
	}
	for _, obj := range crds {
		if err := c.Do(ctx, http.MethodPost, crdsPath, obj, nil); err != nil {
			return fmt.Errorf("create CRD: %w", err)
		}
	}
	c.mu.Lock()
	p := c.running
	c.mu.Unlock()
	err := p.WaitReady(ctx, func(ctx context.Context) error {
		for _, name := range []string{"imagestreams." + Group, "images." + Group} {
			var got struct {
				Status struct {
					Conditions []struct {
						Type, Status string
					} `json:"conditions"`
				} `json:"status"`
			}
			if err := c.Do(ctx, http.MethodGet, crdsPath+"/"+name, nil, &got); err != nil {
				return err
			}
			established := false
			for _, cond := range got.Status.Conditions {
				established = established || cond.Type == "Established" && cond.Status == "True"
			}
			if !established {
				return fmt.Errorf("CRD %s not established yet", name)
			}
		}
		// The CRD handler serves a resource a moment after the condition.
		return c.Do(ctx, http.MethodGet, imageStreamsPath("")+"?limit=1", nil, nil)
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.crdsInstalled = true
	c.mu.Unlock()
	return nil
}
