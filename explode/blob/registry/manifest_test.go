package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// putManifest stores raw as the manifest tagged tag, through h directly.
func putManifest(t *testing.T, h http.Handler, tag, mediaType string, raw []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, bytes.NewReader(raw))
	req.Header.Set("Content-Type", mediaType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		t.Fatalf("put manifest: %d %s", rec.Code, rec.Body)
	}
}

// A manifest is opened by digest like a blob, although the API serves it
// under /manifests/, and its bytes are checked against the digest.
func TestOpenReadsManifestsByDigest(t *testing.T) {
	h := inMemoryRegistry()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	configDigest := digest.FromBytes(config)
	push(t, h, repo, map[digest.Digest][]byte{configDigest: config})
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		configDigest.String() + `","size":` + strconv.Itoa(len(config)) + `},"layers":[]}`)
	putManifest(t, h, "latest", "application/vnd.oci.image.manifest.v1+json", manifest)
	srv := httptest.NewServer(h)
	defer srv.Close()
	src := source(t, srv.URL)

	b, err := src.Open(context.Background(), digest.FromBytes(manifest))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil || !bytes.Equal(got, manifest) {
		t.Fatalf("manifest read back: %q, %v", got, err)
	}
	missing := digest.FromString("neither a blob nor a manifest")
	if _, err := src.Open(context.Background(), missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing.String()) {
		t.Errorf("missing digest: %v; want fs.ErrNotExist naming it", err)
	}
}

// A registry that answers a manifest request with other bytes is refused.
func TestManifestBytesAreVerified(t *testing.T) {
	want := digest.FromString("the manifest that was asked for")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/"):
			_, _ = w.Write([]byte(`{"schemaVersion":2}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	if _, err := source(t, srv.URL).Open(context.Background(), want); err == nil || !strings.Contains(err.Error(), "hash to") {
		t.Fatalf("a manifest with other bytes: %v", err)
	}
}
