// Package registry reads blobs through a registry's V2 API
// (/v2/<repository>/blobs/<digest>), one HTTP Range request per span
// read, so that a layer is never downloaded whole to be read lazily.
//
// A Registry holds what all repositories of one registry share: its
// address, TLS settings, credentials and connection pool. Its
// Repository method returns the blob.Source of one repository, which runs
// go-containerregistry's auth handshake (anonymous, basic, or a bearer
// token bought with basic credentials) the first time it opens a blob.
//
// The source retries 5xx answers, timeouts, dropped connections and bodies
// cut short, with bounded attempts and backoff, and returns either every
// byte asked for or an error. It cannot tell good bytes from bad ones:
// the index verifies every byte against its digest before serving it.
//
// No credential ever appears in an error this package returns: the
// secrets it sends are scrubbed from every message.
package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Registry is one registry's V2 API endpoint.
type Registry struct {
	base     *url.URL
	reg      name.Registry
	keychain authn.Keychain
	// transport is the connection pool under the auth handshake, shared
	// by every repository's source.
	transport http.RoundTripper
	retry     retryPolicy
	insecure  bool
	// maxRequest bounds the bytes one request asks for, so that a long
	// ReadAt is not held to one request timeout.
	maxRequest int64
	ahead      readAhead
	errs       ErrorObserver

	mu      sync.Mutex
	sources map[string]*Source // by repository
}

type config struct {
	keychain   authn.Keychain
	transport  http.RoundTripper
	caFile     string
	insecure   bool
	retry      retryPolicy
	maxRequest int64
	ahead      readAhead
	errs       ErrorObserver
}

// Option configures a Registry.
type Option func(*config)

// WithKeychain resolves the credentials of each repository; by default
// access is anonymous. See AuthFile, TokenAuth and TokenFileAuth.
func WithKeychain(kc authn.Keychain) Option { return func(c *config) { c.keychain = kc } }

// WithAuthenticator uses the same credentials for every repository.
func WithAuthenticator(a authn.Authenticator) Option {
	return WithKeychain(staticKeychain{a})
}

// WithTransport sends requests through rt instead of a transport of the
// package's own. rt then owns TLS, so WithCAFile and WithInsecure cannot
// be given with it.
func WithTransport(rt http.RoundTripper) Option { return func(c *config) { c.transport = rt } }

// WithCAFile trusts the PEM certificates in path as well as the system
// roots, for a registry whose certificate a cluster CA signed.
func WithCAFile(path string) Option { return func(c *config) { c.caFile = path } }

// WithInsecure skips TLS certificate verification. The caller should say
// so in its log: the registry's identity is then taken on trust.
func WithInsecure(insecure bool) Option { return func(c *config) { c.insecure = insecure } }

// WithRetries sets how many times one request is tried in all (at least
// 1), and the wait before the second attempt, which doubles for each
// further attempt up to maxWait.
func WithRetries(attempts int, wait, maxWait time.Duration) Option {
	return func(c *config) {
		c.retry.attempts, c.retry.wait, c.retry.maxWait = max(attempts, 1), wait, max(wait, maxWait)
	}
}

// WithRequestTimeout bounds each request, from sending it to the last byte
// of its body, so that a stalled connection is given up and tried again.
func WithRequestTimeout(d time.Duration) Option { return func(c *config) { c.retry.timeout = d } }

// WithMaxRequestSize bounds the bytes one Range request asks for; a
// longer ReadAt is split into several requests.
func WithMaxRequestSize(n int64) Option { return func(c *config) { c.maxRequest = max(n, 1) } }

// WithReadAhead sets the streams that serve sequential reads: the first
// asks for first bytes, each next one for twice as many up to maxWindow.
// A random read never starts one. WithReadAhead(0, 0) sends one request
// per read.
func WithReadAhead(first, maxWindow int64) Option {
	return func(c *config) {
		if first <= 0 {
			c.ahead = readAhead{}
			return
		}
		c.ahead = readAhead{first: first, max: max(first, maxWindow)}
	}
}

// WithErrorObserver reports every failed request to obs, for metrics;
// see ErrorObserver.
func WithErrorObserver(obs ErrorObserver) Option { return func(c *config) { c.errs = obs } }

// Defaults: a span read of the index (1 MiB) fits one request, which a
// slow registry serves well within the timeout; five attempts over about
// 1.5 s of waits ride out a registry pod restarting behind its service.
const (
	defaultAttempts   = 5
	defaultWait       = 100 * time.Millisecond
	defaultMaxWait    = 2 * time.Second
	defaultTimeout    = 30 * time.Second
	defaultMaxRequest = 8 << 20
)

// New returns the registry at rawURL, "https://host[:port]" or
// "http://host[:port]". Credentials do not belong in the URL: they would
// end up wherever the URL is shown.
func New(rawURL string, opts ...Option) (*Registry, error) {
	c := config{
		retry:      retryPolicy{attempts: defaultAttempts, wait: defaultWait, maxWait: defaultMaxWait, timeout: defaultTimeout},
		maxRequest: defaultMaxRequest,
		ahead:      readAhead{first: defaultReadAheadFirst, max: defaultReadAheadMax},
	}
	for _, o := range opts {
		o(&c)
	}
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		// Lets the handshake ping over plain HTTP at all; the scheme guard
		// below keeps it from ever using the other scheme.
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, append(nameOpts, name.StrictValidation)...)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", u, err)
	}
	u.Host = reg.RegistryStr()
	rt := c.transport
	if rt == nil {
		if rt, err = newTransport(c.caFile, c.insecure); err != nil {
			return nil, fmt.Errorf("registry %s: %w", u, err)
		}
	} else if c.caFile != "" || c.insecure {
		return nil, fmt.Errorf("registry %s: WithCAFile and WithInsecure do not apply to a transport given WithTransport", u)
	}
	if c.keychain == nil {
		c.keychain = staticKeychain{authn.Anonymous}
	}
	return &Registry{
		base:       u,
		reg:        reg,
		keychain:   c.keychain,
		transport:  &schemeGuard{scheme: u.Scheme, host: reg.RegistryStr(), inner: rt},
		retry:      c.retry,
		insecure:   c.insecure,
		maxRequest: c.maxRequest,
		ahead:      c.ahead,
		errs:       c.errs,
		sources:    map[string]*Source{},
	}, nil
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the whole input, which may hold a password.
		return nil, errors.New("registry URL does not parse; want https://host[:port] or http://host[:port]")
	}
	switch {
	case u.User != nil:
		return nil, fmt.Errorf("registry URL %s: credentials do not belong in the URL; give them as an auth file or token", u.Redacted())
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("registry URL %s: want https://host[:port] or http://host[:port]", u.Redacted())
	case u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("registry URL %s: no host", u.Redacted())
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("registry URL %s: the V2 API lives at the root, give only scheme, host and port", u.Redacted())
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// newTransport is a connection pool that trusts the system roots plus
// caFile, or nothing at all when insecure.
func newTransport(caFile string, insecure bool) (*http.Transport, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case insecure:
		tlsConfig.InsecureSkipVerify = true
	case caFile != "":
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tlsConfig
	// Readers of many layers at once each keep a connection; without
	// idle ones to reuse, every span read would pay a TLS handshake.
	t.MaxIdleConnsPerHost = 32
	// Blobs are compressed already, and a transparently inflated body
	// would not be the bytes of the range asked for.
	t.DisableCompression = true
	return t, nil
}

// String returns the registry's URL.
func (r *Registry) String() string { return r.base.String() }

// Insecure reports whether TLS verification is off, for the log line that
// must say so at start.
func (r *Registry) Insecure() bool { return r.insecure }

// schemeGuard refuses requests to the registry in the other scheme. The
// handshake of go-containerregistry tries both https and http for
// loopback and private addresses; a registry configured as https must not
// be talked to, nor sent credentials, over plain HTTP, and the reverse.
type schemeGuard struct {
	scheme string
	host   string
	inner  http.RoundTripper
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == g.host && req.URL.Scheme != g.scheme {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &schemeError{host: g.host, want: g.scheme, got: req.URL.Scheme}
	}
	return g.inner.RoundTrip(req)
}

// staticKeychain answers every repository with one authenticator.
type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }
