package registry_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/registry"
)

// TestPushAndReadBack pushes generated images (an OCI manifest, a Docker
// schema 2 manifest and a two-platform index) to both flavours, reads them
// back over HTTP and finds the same bytes in the filesystem storage.
func TestPushAndReadBack(t *testing.T) {
	layout := t.TempDir()
	images := map[string]imagegen.Image{
		"oci":    imagegen.DemoImage(),
		"docker": imagegen.DemoImage().WithFormat(imagegen.FormatDocker),
		"multi":  imagegen.MultiPlatformImage(7),
	}
	for tag, img := range images {
		if _, err := imagegen.WriteImage(layout, tag, img); err != nil {
			t.Fatal(err)
		}
	}
	flavours := map[string][]registry.Option{"plain": nil, "tls+auth": {registry.WithTLSAndAuth()}}
	for name, opts := range flavours {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := registry.Start(t, opts...)
			t.Logf("%s registry up in %v", r.URL(), time.Since(start).Round(time.Millisecond))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for tag := range images {
				pushed, err := r.PushLayout(ctx, layout, tag, "team-a/app")
				if err != nil {
					t.Fatal(err)
				}
				checkManifest(t, ctx, r, layout, tag, pushed)
			}
			link := filepath.Join(r.RootDir, "docker/registry/v2/repositories/team-a/app/_manifests/tags/oci/current/link")
			if data, err := os.ReadFile(link); err != nil || !strings.HasPrefix(string(data), "sha256:") {
				t.Errorf("tag link %s: %q, %v", link, data, err)
			}
			if _, err := r.PushLayout(ctx, layout, "no-such-tag", "team-a/app"); err == nil {
				t.Error("pushing a tag the layout lacks succeeded")
			}
			checkPushBlob(t, ctx, r)
			if r.CAPEM != nil {
				checkCredentialsAndCA(t, ctx, r)
			}
		})
	}
}

// checkManifest reads tag's manifest back, then every manifest and blob
// it refers to, over HTTP and from the storage, comparing with the layout.
func checkManifest(t *testing.T, ctx context.Context, r *registry.Registry, layout, tag string, want digest.Digest) {
	t.Helper()
	raw := get(t, ctx, r, "/v2/team-a/app/manifests/"+tag, registry.ManifestMediaTypes)
	if got := digest.FromBytes(raw); got != want {
		t.Fatalf("manifest %s reads back as %s, pushed %s", tag, got, want)
	}
	var m struct {
		Config    *ispec.Descriptor  `json:"config"`
		Layers    []ispec.Descriptor `json:"layers"`
		Manifests []ispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, child := range m.Manifests {
		checkManifest(t, ctx, r, layout, child.Digest.String(), child.Digest)
	}
	blobs := m.Layers
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	if len(blobs) == 0 && len(m.Manifests) == 0 {
		t.Fatalf("manifest %s refers to nothing: %s", tag, raw)
	}
	for _, b := range blobs {
		over := get(t, ctx, r, "/v2/team-a/app/blobs/"+b.Digest.String(), "")
		stored, err := os.ReadFile(r.BlobPath(b.Digest))
		if err != nil {
			t.Fatalf("blob %s not in the storage: %v", b.Digest, err)
		}
		original, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", b.Digest.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(over) != b.Digest || !bytes.Equal(stored, original) || !bytes.Equal(over, original) {
			t.Fatalf("blob %s differs: over HTTP %s, stored %s", b.Digest, digest.FromBytes(over), digest.FromBytes(stored))
		}
	}
}

func get(t *testing.T, ctx context.Context, r *registry.Registry, path, accept string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := r.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", path, resp.Status, err, body)
	}
	return body
}

// checkCredentialsAndCA shows that the secure flavour really checks:
// no credentials or a wrong password is 401, and a client that does not
// trust the test CA cannot connect at all.
func checkCredentialsAndCA(t *testing.T, ctx context.Context, r *registry.Registry) {
	t.Helper()
	for _, creds := range [][2]string{{"", ""}, {r.Username, "wrong"}} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/team-a/app/tags/list", nil)
		if err != nil {
			t.Fatal(err)
		}
		if creds[0] != "" {
			req.SetBasicAuth(creds[0], creds[1])
		}
		resp, err := r.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("credentials %q: %s, want 401", creds[0], resp.Status)
		}
	}
	_, err := http.Get(r.URL() + "/v2/")
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Errorf("a client without the test CA: %v, want an unknown authority error", err)
	}
	config, err := os.ReadFile(r.AuthFile)
	if err != nil || !strings.Contains(string(config), `"`+r.Host+`"`) {
		t.Errorf("auth file %s: %s %v", r.AuthFile, config, err)
	}
}

// checkPushBlob pushes a lone blob, twice (the second finds it there), and
// one whose bytes do not match its digest, which the registry refuses.
func checkPushBlob(t *testing.T, ctx context.Context, r *registry.Registry) {
	t.Helper()
	content := []byte("a blob no manifest names")
	d := digest.FromBytes(content)
	for range 2 {
		if err := r.PushBlob(ctx, "team-a/loose", d, bytes.NewReader(content), int64(len(content))); err != nil {
			t.Fatal(err)
		}
	}
	if stored, err := os.ReadFile(r.BlobPath(d)); err != nil || !bytes.Equal(stored, content) {
		t.Fatalf("pushed blob in the storage: %q, %v", stored, err)
	}
	wrong := digest.FromString("something else")
	if err := r.PushBlob(ctx, "team-a/loose", wrong, bytes.NewReader(content), int64(len(content))); err == nil {
		t.Fatal("a blob that does not match its digest was taken")
	}
	if _, err := os.Stat(r.BlobPath(wrong)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused blob is in the storage: %v", err)
	}
}
