package registry_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A registry whose HEAD leaves out Content-Length still gives the size,
// through the total of a one-byte range (416 with "bytes */0" for an
// empty blob, as http.ServeContent answers).
func TestSizeWithoutContentLength(t *testing.T) {
	d, want, h := bigBlob(t, 12345)
	empty := digest.FromBytes(nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()),
			r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+empty.String()):
			w.WriteHeader(http.StatusOK) // no Content-Length
		case strings.HasSuffix(r.URL.Path, "/blobs/"+empty.String()):
			w.Header().Set("Content-Range", "bytes */0")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		default:
			h.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	src := source(t, srv.URL)
	for blob, size := range map[digest.Digest]int64{d: int64(len(want)), empty: 0} {
		b, err := src.Open(t.Context(), blob)
		if err != nil {
			t.Fatalf("Open(%s): %v", blob, err)
		}
		if b.Size() != size {
			t.Errorf("Size() = %d, want %d", b.Size(), size)
		}
		b.Close()
	}
}

// A registry that answers for another blob than the one asked for is not
// believed.
func TestWrongDigestRefused(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/blobs/") {
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	if b, err := source(t, srv.URL).Open(t.Context(), d); err == nil {
		b.Close()
		t.Error("Open believed a registry that answered with another digest")
	}
}
