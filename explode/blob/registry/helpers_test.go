package registry_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/distribution"
)

// inMemoryRegistry is go-containerregistry's registry, quiet.
func inMemoryRegistry() http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
}

// push uploads blobs to repo, each in one request, through h directly so
// that no auth or fault stands in the way.
func push(t testing.TB, h http.Handler, repo string, blobs map[digest.Digest][]byte) {
	t.Helper()
	for d, b := range blobs {
		req := httptest.NewRequest(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			t.Fatalf("push %s: %d %s", d, rec.Code, rec.Body)
		}
	}
}

// randomSecret is a credential no message could contain by chance.
func randomSecret(t testing.TB, prefix string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// basicAuth lets through requests with user:password, and asks others
// for basic credentials, as docker-registry with htpasswd does.
func basicAuth(user, password string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="explodefs-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenServer is a registry behind a token service, as OpenShift's
// integrated registry is: the client trades basic credentials whose
// password is a service account token for a bearer token, at /token.
type tokenServer struct {
	next      http.Handler
	password  string // what /token takes as the password
	realm     string // set once the server's URL is known
	mu        sync.Mutex
	issued    map[string]bool
	exchanges atomic.Int64
}

func newTokenServer(password string, next http.Handler) *tokenServer {
	return &tokenServer{next: next, password: password, issued: map[string]bool{}}
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		s.exchanges.Add(1)
		if _, p, ok := r.BasicAuth(); !ok || p != s.password {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}`, http.StatusUnauthorized)
			return
		}
		tok := hex.EncodeToString([]byte(fmt.Sprint(s.exchanges.Load()))) + "-bearer-" + r.URL.Query().Get("scope")
		s.mu.Lock()
		s.issued[tok] = true
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"token": tok})
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	valid := ok && s.issued[tok]
	s.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="explodefs-test"`, s.realm+"/token"))
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	s.next.ServeHTTP(w, r)
}

// writeCA writes the certificate of a TLS test server as a CA file.
func writeCA(t testing.TB, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeAuthFile writes a docker config.json with entries.
func writeAuthFile(t testing.TB, entries map[string]map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": entries})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// requestLog counts the requests a handler sees and the Range each asked for.
type requestLog struct {
	next   http.Handler
	mu     sync.Mutex
	ranges []string
	total  atomic.Int64
}

func (l *requestLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.total.Add(1)
	if rng := r.Header.Get("Range"); rng != "" {
		l.mu.Lock()
		l.ranges = append(l.ranges, rng)
		l.mu.Unlock()
	}
	l.next.ServeHTTP(w, r)
}

func (l *requestLog) rangesSeen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ranges...)
}

// emptyStorage is a registry storage without blobs.
func emptyStorage(t testing.TB) blob.Source {
	return distribution.New(t.TempDir())
}

// fmtSscanf parses a Range header's bounds.
func fmtSscanf(rng string, first, last *int64) (int, error) {
	return fmt.Sscanf(rng, "bytes=%d-%d", first, last)
}
