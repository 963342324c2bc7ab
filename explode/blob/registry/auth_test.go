package registry_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/explodefs/explodefs/explode/blob/registry"
)

// No credential appears in any error, whatever goes wrong and whoever
// quotes it: refused credentials, a token service that echoes what it
// was sent, a registry whose error body quotes the Authorization header,
// a token answer without a token, a registry gone.
func TestNoCredentialInErrors(t *testing.T) {
	d, _, h := bigBlob(t, 1000)
	password := randomSecret(t, "pw-")
	token := randomSecret(t, "sa-")
	bearer := randomSecret(t, "bearer-")
	refresh := randomSecret(t, "refresh-")
	secrets := []string{
		password, token, bearer, refresh,
		base64.StdEncoding.EncodeToString([]byte("puller:" + password)),
		base64.StdEncoding.EncodeToString([]byte("serviceaccount:" + token)),
	}
	// go-containerregistry logs through its package's loggers (silent by
	// default); turned on, they must not show a credential either.
	var logged bytes.Buffer
	for _, l := range []**log.Logger{&logs.Warn, &logs.Debug, &logs.Progress} {
		old := *l
		*l = log.New(&logged, "", 0)
		t.Cleanup(func() { *l = old })
	}
	t.Cleanup(func() {
		for _, s := range secrets {
			if strings.Contains(logged.String(), s) {
				t.Errorf("a log line shows a credential: %s", logged.String())
			}
		}
	})
	// echo answers with everything it was sent, as a careless server might.
	echo := func(w http.ResponseWriter, r *http.Request, code int) {
		http.Error(w, fmt.Sprintf(`{"errors":[{"code":"DENIED","message":"you sent %q to %s"}]}`, r.Header.Get("Authorization"), r.URL), code)
	}
	type scenario struct {
		name    string
		handler func(realm string) http.Handler
		opts    []registry.Option
		read    bool // fail on ReadAt rather than Open
	}
	basicWith := func(pw string) registry.Option {
		return registry.WithAuthenticator(&authn.Basic{Username: "puller", Password: pw})
	}
	scenarios := []scenario{{
		name: "basic credentials refused, body echoes them",
		handler: func(string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { echo(w, r, 401) })
		},
		opts: []registry.Option{basicWith(password)},
	}, {
		name: "token service refuses and echoes",
		handler: func(realm string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					echo(w, r, http.StatusForbidden)
					return
				}
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="x"`, realm+"/token"))
				w.WriteHeader(401)
			})
		},
		opts: []registry.Option{registry.WithAuthenticator(registry.TokenAuth(token))},
	}, {
		name: "token answer holds a refresh token but no token",
		handler: func(realm string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					json.NewEncoder(w).Encode(map[string]string{"refresh_token": refresh})
					return
				}
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="x"`, realm+"/token"))
				w.WriteHeader(401)
			})
		},
		opts: []registry.Option{registry.WithAuthenticator(registry.TokenAuth(token))},
	}, {
		name: "registry quotes the bearer token in a 500 on HEAD and GET",
		handler: func(realm string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/token":
					json.NewEncoder(w).Encode(map[string]string{"token": bearer})
				case r.Header.Get("Authorization") != "Bearer "+bearer:
					w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="x"`, realm+"/token"))
					w.WriteHeader(401)
				case r.URL.Path == "/v2/":
					w.WriteHeader(200)
				default:
					echo(w, r, http.StatusInternalServerError)
				}
			})
		},
		opts: []registry.Option{registry.WithAuthenticator(registry.TokenAuth(token))},
	}, {
		name: "registry fails reads after a good open, quoting the credentials",
		handler: func(string) http.Handler {
			return basicAuth("puller", password, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
					echo(w, r, http.StatusServiceUnavailable)
					return
				}
				h.ServeHTTP(w, r)
			}))
		},
		opts: []registry.Option{basicWith(password)},
		read: true,
	}}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sc.handler(srv.URL).ServeHTTP(w, r)
			}))
			defer srv.Close()
			opts := append([]registry.Option{registry.WithRetries(2, time.Millisecond, time.Millisecond)}, sc.opts...)
			b, err := source(t, srv.URL, opts...).Open(t.Context(), d)
			if sc.read {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer b.Close()
				_, err = b.ReadAt(make([]byte, 10), 0)
			} else if err == nil {
				b.Close()
				t.Fatal("Open succeeded, want a failure")
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows a credential: %v", err)
				}
			}
			if !strings.Contains(err.Error(), d.String()) {
				t.Errorf("the error does not name the blob: %v", err)
			}
			t.Logf("error: %v", err)
		})
	}
	t.Run("unreachable registry", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		_, err := source(t, url, basicWith(password), registry.WithRetries(2, time.Millisecond, time.Millisecond)).Open(t.Context(), d)
		if err == nil || strings.Contains(err.Error(), password) {
			t.Errorf("Open from a closed port: %v", err)
		}
	})
	t.Run("URL with credentials", func(t *testing.T) {
		_, err := registry.New("https://puller:" + password + "@registry.example")
		if err == nil || strings.Contains(err.Error(), password) {
			t.Errorf("New with a password in the URL: %v, want an error without the password", err)
		}
	})
	t.Run("auth file that does not parse", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(p, []byte(`{"auths":{"registry.example":{"auth":"`+password+`}}`), 0o600)
		_, err := registry.AuthFile(p)
		if err == nil || strings.Contains(err.Error(), password) {
			t.Errorf("AuthFile of broken JSON: %v, want an error without the password", err)
		}
		os.WriteFile(p, []byte(`{"auths":{"registry.example":{"auth":7}}`), 0o600)
		if _, err := registry.AuthFile(p); err == nil {
			t.Error("AuthFile of an auth that is a number succeeded")
		}
	})
}

// Credentials are scoped: requests carry them only once the handshake
// asked, and a registry without auth is read anonymously.
func TestAnonymousAccessSendsNoCredentials(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			sent = append(sent, a)
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.ReadAt(make([]byte, 100), 0); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 0 {
		t.Errorf("anonymous source sent Authorization headers %q", sent)
	}
}

func TestAuthFileMatching(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	p := writeAuthFile(t, map[string]map[string]string{
		"registry.example:5000":              {"auth": b64("host:pw-host")},
		"registry.example:5000/team":         {"auth": b64("team:pw-team")},
		"registry.example:5000/team/special": {"username": "special", "password": "pw-special"},
		"https://other.example/v1/":          {"auth": b64("other:pw-other")},
		"registry.example":                   {"auth": b64("noport:pw-noport")},
	})
	kc, err := registry.AuthFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"registry.example:5000/ns/stream":         "host",
		"registry.example:5000/team/stream":       "team",
		"registry.example:5000/teammate/stream":   "host",
		"registry.example:5000/team/special":      "special",
		"registry.example:5000/team/special/more": "special",
		"other.example/ns/stream":                 "other",
		"registry.example/ns/stream":              "noport",
		"registry.example:5001/ns/stream":         "",
		"elsewhere.example/ns/stream":             "",
	} {
		r, err := name.NewRepository(ref)
		if err != nil {
			t.Fatal(err)
		}
		a, err := kc.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != want || (want != "" && cfg.Password != "pw-"+want) {
			t.Errorf("%s: user %q password %q, want user %q", ref, cfg.Username, cfg.Password, want)
		}
	}
}

// A pull secret of the older .dockercfg kind has no "auths" level; a
// credential helper named in a config.json is not run.
func TestAuthFileFormats(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, "dockercfg")
	os.WriteFile(legacy, []byte(`{"registry.example":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("old:pw-old"))+`","email":"x@example"}}`), 0o600)
	helper := filepath.Join(dir, "config.json")
	os.WriteFile(helper, []byte(`{"credsStore":"desktop","auths":{}}`), 0o600)
	repo, _ := name.NewRepository("registry.example/ns/stream")
	for path, want := range map[string]string{legacy: "old", helper: ""} {
		kc, err := registry.AuthFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		a, err := kc.Resolve(repo)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.Authorization()
		if cfg.Username != want {
			t.Errorf("%s: user %q, want %q", filepath.Base(path), cfg.Username, want)
		}
	}
	if _, err := registry.AuthFile(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AuthFile of a missing file: %v", err)
	}
}

// A rotated token file is read again at each use.
func TestTokenFileAuthRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	auth := registry.TokenFileAuth(p)
	if _, err := auth.Authorization(); err == nil {
		t.Error("a missing token file gave credentials")
	}
	for _, tok := range []string{"first-token", "second-token"} {
		os.WriteFile(p, []byte(tok+"\n"), 0o600)
		cfg, err := auth.Authorization()
		if err != nil || cfg.Password != tok || cfg.Username == "" {
			t.Errorf("after writing %q: %+v, %v", tok, cfg, err)
		}
	}
}

// Repository names follow distribution's grammar, so that nothing but a
// repository reaches the URL path.
func TestRepositoryNames(t *testing.T) {
	reg, err := registry.New("https://registry.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "UPPER/case", "ns/", "../x", "ns//stream", "other.example:5000/ns/s?x"} {
		if src, err := reg.Repository(bad); err == nil {
			t.Errorf("Repository(%q) = %s, want an error", bad, src)
		}
	}
}

// A rotated pull secret is used from the next request on, through the
// authenticator already handed out.
func TestAuthFileRotation(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	p := writeAuthFile(t, map[string]map[string]string{"registry.example": {"auth": b64("puller:old-password")}})
	kc, err := registry.AuthFile(p)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository("registry.example/ns/stream")
	auth, err := kc.Resolve(repo)
	if err != nil {
		t.Fatal(err)
	}
	rotated := writeAuthFile(t, map[string]map[string]string{"registry.example": {"auth": b64("puller:new-password")}})
	data, _ := os.ReadFile(rotated)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(p, later, later)
	cfg, err := auth.Authorization()
	if err != nil || cfg.Password != "new-password" {
		t.Errorf("after rotation: %+v, %v; want the new password", cfg, err)
	}
}
