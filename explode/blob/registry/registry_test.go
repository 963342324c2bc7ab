package registry_test

import (
	"encoding/base64"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/registry"
)

const repo = "ns/stream"

// source returns repo's source in the registry at url.
func source(t testing.TB, url string, opts ...registry.Option) *registry.Source {
	t.Helper()
	reg, err := registry.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	src, err := reg.Repository(repo)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// Anonymous access over plain HTTP.
func TestConformanceHTTP(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		h := inMemoryRegistry()
		push(t, h, repo, blobs)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return source(t, srv.URL)
	})
}

// HTTPS with a certificate only the CA file vouches for, and basic auth
// from a docker config.json, as with --registry-ca-file and
// --registry-auth-file against docker-registry with htpasswd.
func TestConformanceTLSAndAuthFile(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		h := inMemoryRegistry()
		push(t, h, repo, blobs)
		password := randomSecret(t, "pw-")
		srv := httptest.NewTLSServer(basicAuth("puller", password, h))
		t.Cleanup(srv.Close)
		host := srv.Listener.Addr().String()
		authFile := writeAuthFile(t, map[string]map[string]string{
			host: {"auth": base64.StdEncoding.EncodeToString([]byte("puller:" + password))},
		})
		kc, err := registry.AuthFile(authFile)
		if err != nil {
			t.Fatal(err)
		}
		return source(t, srv.URL, registry.WithCAFile(writeCA(t, srv)), registry.WithKeychain(kc))
	})
}

// A service account token given as the password, traded for a bearer
// token at the registry's token service, as OpenShift's registry does.
func TestConformanceBearerTokenAsPassword(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		h := inMemoryRegistry()
		push(t, h, repo, blobs)
		saToken := randomSecret(t, "sa-")
		ts := newTokenServer(saToken, h)
		srv := httptest.NewTLSServer(ts)
		t.Cleanup(srv.Close)
		ts.realm = srv.URL
		src := source(t, srv.URL, registry.WithCAFile(writeCA(t, srv)), registry.WithAuthenticator(registry.TokenAuth(saToken)))
		t.Cleanup(func() {
			if ts.exchanges.Load() == 0 {
				t.Errorf("no token was bought: the bearer flow was not exercised")
			}
		})
		return src
	})
}

// The suite passes through a proxy that breaks a fifth of the blob
// requests in every way it knows: retries must hide all of it.
func TestConformanceThroughFaults(t *testing.T) {
	var proxy *blobtest.FaultProxy
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		h := inMemoryRegistry()
		push(t, h, repo, blobs)
		upstream := httptest.NewServer(h)
		t.Cleanup(upstream.Close)
		var err error
		proxy, err = blobtest.NewFaultProxy(upstream.URL, nil, blobtest.Faults{
			ServerError: 0.04, CutShort: 0.04, Stall: 0.03, StallBody: 0.03, IgnoreRange: 0.03, ShiftRange: 0.03,
			StallFor: 10 * time.Second, Seed: 42,
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(proxy)
		t.Cleanup(srv.Close)
		// 12 attempts: a read fails only if 12 in a row break (1 in 10^8).
		return source(t, srv.URL, registry.WithRetries(12, time.Millisecond, 20*time.Millisecond),
			registry.WithRequestTimeout(300*time.Millisecond))
	})
	injected := proxy.Injected()
	for _, f := range []blobtest.Fault{blobtest.ServerError, blobtest.CutShort, blobtest.Stall, blobtest.StallBody, blobtest.IgnoreRange, blobtest.ShiftRange} {
		if injected[f] == 0 {
			t.Errorf("no %s fault was injected: %v", f, injected)
		}
	}
	t.Logf("faults injected: %v", injected)
}

// The HTTP source tried after a file storage that lacks the blob, as for
// a pull-through blob not mirrored yet.
func TestConformanceBehindEmptyStorage(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		h := inMemoryRegistry()
		push(t, h, repo, blobs)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return blob.FirstOf(emptyStorage(t), source(t, srv.URL))
	})
}

// The source's name says which registry and repository it reads.
func TestString(t *testing.T) {
	src := source(t, "https://registry.example:5000")
	if got, want := src.String(), "https://registry.example:5000/ns/stream"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// A stream that changes asks for its repository's source again; it gets
// the same one, so the auth handshake is not redone.
func TestRepositoryIsReused(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	saToken := randomSecret(t, "sa-")
	ts := newTokenServer(saToken, h)
	srv := httptest.NewServer(ts)
	defer srv.Close()
	ts.realm = srv.URL
	reg, err := registry.New(srv.URL, registry.WithAuthenticator(registry.TokenAuth(saToken)))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		src, err := reg.Repository(repo)
		if err != nil {
			t.Fatal(err)
		}
		b, err := src.Open(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	if n := ts.exchanges.Load(); n != 1 {
		t.Errorf("%d token exchanges for three opens through one repository, want 1", n)
	}
	other, _ := reg.Repository("ns/other")
	first, _ := reg.Repository(repo)
	if other == first {
		t.Error("two repositories share a source")
	}
}
