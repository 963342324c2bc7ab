package registry_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/distribution"
	"github.com/explodefs/explodefs/explode/blob/registry"
	testregistry "github.com/explodefs/explodefs/test/registry"
)

// Debian's docker-registry (docker/distribution, what OpenShift's
// integrated registry is built on) with TLS from a test CA and htpasswd:
// its storage read through file:// and its API through https:// with the
// CA file and the auth file pass the same suite, and so does the API
// behind a fault-injecting proxy.
func TestConformanceRealRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	r := testregistry.Start(t, testregistry.WithTLSAndAuth())
	pushed := map[digest.Digest][]byte{}
	pushOnce := func(t *testing.T, blobs map[digest.Digest][]byte) {
		for d, b := range blobs {
			if _, ok := pushed[d]; !ok {
				pushToReal(t, r, d, b)
				pushed[d] = b
			}
		}
	}

	t.Run("file", func(t *testing.T) {
		blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
			pushOnce(t, blobs)
			src, err := distribution.FromURL((&url.URL{Scheme: "file", Path: r.RootDir}).String())
			if err != nil {
				t.Fatal(err)
			}
			return src
		})
	})
	t.Run("https", func(t *testing.T) {
		blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
			pushOnce(t, blobs)
			kc, err := registry.AuthFile(r.AuthFile)
			if err != nil {
				t.Fatal(err)
			}
			return source(t, r.URL(), registry.WithCAFile(r.CAFile), registry.WithKeychain(kc))
		})
	})
	t.Run("https-through-faults", func(t *testing.T) {
		var proxy *blobtest.FaultProxy
		blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
			pushOnce(t, blobs)
			var err error
			proxy, err = blobtest.NewFaultProxy(r.URL(), r.Client.Transport, blobtest.Faults{
				ServerError: 0.04, CutShort: 0.04, Stall: 0.03, StallBody: 0.03, IgnoreRange: 0.03, ShiftRange: 0.03,
				StallFor: 10 * time.Second, Seed: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(proxy)
			t.Cleanup(srv.Close)
			return source(t, srv.URL, registry.WithAuthenticator(&authn.Basic{Username: r.Username, Password: r.Password}),
				registry.WithRetries(12, time.Millisecond, 20*time.Millisecond), registry.WithRequestTimeout(400*time.Millisecond))
		})
		t.Logf("faults injected: %v", proxy.Injected())
	})
	t.Run("file-then-https", func(t *testing.T) {
		// A blob the storage lacks is read over the API: here the
		// storage is another, empty one, as for a pull-through blob.
		blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
			pushOnce(t, blobs)
			kc, err := registry.AuthFile(r.AuthFile)
			if err != nil {
				t.Fatal(err)
			}
			return blob.FirstOf(emptyStorage(t), source(t, r.URL(), registry.WithCAFile(r.CAFile), registry.WithKeychain(kc)))
		})
	})
}

// pushToReal uploads one blob to repo: a POST starts the upload, a PUT
// with the digest finishes it.
func pushToReal(t testing.TB, r *testregistry.Registry, d digest.Digest, b []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := r.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPut, loc.String(), bytes.NewReader(b))
	req.ContentLength = int64(len(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = r.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s: %s", d, resp.Status)
	}
}
