package registry

import (
	"encoding/base64"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
)

// redactor remembers every secret a source sent or was given, and scrubs
// them from error messages. Messages come from many layers (the auth
// handshake, a token server's error body, a registry's error JSON), and
// any of them may quote what it was sent; scrubbing at the one place
// errors leave the package covers them all.
type redactor struct {
	mu      sync.Mutex
	secrets []string
}

// maxSecrets bounds what a long-running source remembers: a rotated token
// adds one, and the newest are the ones that can still show up.
const maxSecrets = 64

// minSecret is the shortest string scrubbed: replacing every "a" of a
// message because a test password was "a" would make errors unreadable,
// and so short a secret is not one.
const minSecret = 4

func (r *redactor) add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if len(s) < minSecret || slices.Contains(r.secrets, s) {
			continue
		}
		r.secrets = append(r.secrets, s)
		if len(r.secrets) > maxSecrets {
			r.secrets = r.secrets[1:]
		}
	}
}

// addConfig remembers every form in which cfg's credentials travel.
func (r *redactor) addConfig(cfg *authn.AuthConfig) {
	if cfg == nil {
		return
	}
	r.add(cfg.Password, cfg.Auth, cfg.IdentityToken, cfg.RegistryToken)
	if cfg.Username != "" && cfg.Password != "" {
		r.add(base64.StdEncoding.EncodeToString([]byte(cfg.Username + ":" + cfg.Password)))
	}
}

// addHeader remembers the credential of an Authorization header.
func (r *redactor) addHeader(h string) {
	if h == "" {
		return
	}
	r.add(h)
	if _, cred, ok := strings.Cut(h, " "); ok {
		r.add(cred)
		if raw, err := base64.StdEncoding.DecodeString(cred); err == nil {
			if _, pass, ok := strings.Cut(string(raw), ":"); ok {
				r.add(pass)
			}
		}
	}
}

// tokenFields matches credentials in the JSON of a token server's answer,
// which go-containerregistry quotes when the answer holds no token.
var tokenFields = regexp.MustCompile(`(?i)"(token|access_token|refresh_token|id_token|password|identitytoken|registrytoken|auth)"\s*:\s*"[^"]*"`)

func (r *redactor) scrub(msg string) string {
	r.mu.Lock()
	secrets := append([]string(nil), r.secrets...)
	r.mu.Unlock()
	// Longest first, so that a secret containing another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "[REDACTED]")
	}
	return tokenFields.ReplaceAllString(msg, `"$1":"[REDACTED]"`)
}

// redact returns err with every known secret scrubbed from its message.
// errors.Is and errors.As still see the original chain.
func (r *redactor) redact(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: r.scrub(err.Error()), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// recorder notes the Authorization header of every request below the
// auth handshake, so that bearer tokens bought from a token server, which
// no keychain knows, are scrubbed too.
type recorder struct {
	secrets *redactor
	inner   http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.secrets.addHeader(req.Header.Get("Authorization"))
	return r.inner.RoundTrip(req)
}
