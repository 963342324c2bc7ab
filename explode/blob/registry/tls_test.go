package registry_test

import (
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/blob/registry"
)

// The registry's certificate is verified: against the system roots alone
// it fails at once (a retry would not help), with the CA file it works,
// and WithInsecure skips the check.
func TestTLSVerification(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	var requests atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	slow := registry.WithRetries(5, 2*time.Second, 2*time.Second)

	start := time.Now()
	_, err := source(t, srv.URL, slow).Open(t.Context(), d)
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Errorf("Open without the CA: %v, want x509.UnknownAuthorityError", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a certificate that does not verify was retried (%v)", took)
	}

	for name, opt := range map[string]registry.Option{
		"CA file":  registry.WithCAFile(writeCA(t, srv)),
		"insecure": registry.WithInsecure(true),
	} {
		b, err := source(t, srv.URL, opt).Open(t.Context(), d)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b.Close()
	}
	reg, _ := registry.New(srv.URL, registry.WithInsecure(true))
	if !reg.Insecure() {
		t.Error("Insecure() is false with WithInsecure(true)")
	}
}

// The scheme is the one configured: an https source never falls back to
// plain HTTP (where its credentials would travel in clear), and an http
// source does not talk TLS.
func TestSchemeIsNeverSwitched(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	plain := httptest.NewServer(h)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()
	quick := registry.WithRetries(2, time.Millisecond, time.Millisecond)

	httpsToPlain := "https://" + strings.TrimPrefix(plain.URL, "http://")
	if b, err := source(t, httpsToPlain, quick, registry.WithInsecure(true)).Open(t.Context(), d); err == nil {
		b.Close()
		t.Error("an https source read from a plain HTTP server")
	}
	httpToTLS := "http://" + strings.TrimPrefix(tlsSrv.URL, "https://")
	if b, err := source(t, httpToTLS, quick).Open(t.Context(), d); err == nil {
		b.Close()
		t.Error("an http source read from a TLS server")
	}
}

func TestNewValidates(t *testing.T) {
	for _, good := range []string{"https://registry.example", "http://10.0.0.1:5000", "https://[::1]:5000/"} {
		if _, err := registry.New(good); err != nil {
			t.Errorf("New(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"registry.example:5000", "ftp://registry.example", "https://", "https://registry.example/v2/",
		"https://registry.example?x=1", "file:///registry", "https://bad host"} {
		if _, err := registry.New(bad); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(ca, []byte("not a certificate"), 0o600)
	if _, err := registry.New("https://registry.example", registry.WithCAFile(ca)); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
	if _, err := registry.New("https://registry.example", registry.WithCAFile(filepath.Join(t.TempDir(), "absent"))); err == nil {
		t.Error("a missing CA file was accepted")
	}
	if _, err := registry.New("https://registry.example", registry.WithTransport(http.DefaultTransport), registry.WithInsecure(true)); err == nil {
		t.Error("WithInsecure was accepted with WithTransport, where it would do nothing")
	}
}
