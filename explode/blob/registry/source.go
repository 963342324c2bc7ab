package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// Source opens the blobs of one repository of a registry. It is safe for
// concurrent use.
//
// Its blobs are not blob.Versioned: a registry has nothing that tells one
// copy of a blob from another (distribution's ETag is the digest itself),
// so the controller reads a copy that failed on its content again at each
// retry (every --retry-max) instead of pinning it as bad until the daemon
// restarts. A repaired registry is then picked up, at the cost of one
// download of the bad blob per retry.
type Source struct {
	reg     *Registry
	repo    name.Repository
	secrets *redactor

	mu     sync.Mutex
	client *http.Client // nil until the first successful handshake
}

var _ blob.Source = (*Source)(nil)

// Repository returns the source of the blobs of repo ("namespace/stream").
// A registry only serves a blob through a repository that links it, and
// credentials are scoped per repository too. Asking again for the same
// repository returns the same Source, so that its auth handshake and
// token are not redone each time a stream changes.
func (r *Registry) Repository(repo string) (*Source, error) {
	if !repositoryName.MatchString(repo) {
		return nil, fmt.Errorf("repository %q of %s: not a valid repository name", repo, r)
	}
	ref, err := name.NewRepository(r.reg.RegistryStr()+"/"+repo, name.StrictValidation)
	if err != nil || ref.RegistryStr() != r.reg.RegistryStr() || ref.RepositoryStr() != repo {
		return nil, fmt.Errorf("repository %q of %s: not a valid repository name", repo, r)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if src, ok := r.sources[repo]; ok {
		return src, nil
	}
	if len(r.sources) >= maxSources {
		// Forgetting one costs only a handshake when it is asked for again.
		for k := range r.sources {
			delete(r.sources, k)
			break
		}
	}
	src := &Source{reg: r, repo: r.reg.Repo(repo), secrets: &redactor{}}
	r.sources[repo] = src
	return src, nil
}

// maxSources bounds the repositories a Registry remembers.
const maxSources = 4096

// repositoryName is distribution's grammar of repository names: lowercase
// components separated by slashes, each of alphanumerics joined by ".",
// "_", "__" or dashes. go-containerregistry's own check lets "../x" and
// empty components through, which would reach the URL path.
var repositoryName = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// String implements blob.Source: the registry's URL and the repository.
func (s *Source) String() string { return s.reg.String() + "/" + s.repo.RepositoryStr() }

// Open implements blob.Source. It asks the registry for the blob's size
// (HEAD); the bytes are fetched by ReadAt, a range at a time. A digest the
// registry has no blob of is read as a manifest.
func (s *Source) Open(ctx context.Context, d digest.Digest) (blob.Blob, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q of %s: %w", d, s, err)
	}
	b, err := s.openBlobOrManifest(ctx, d)
	if err != nil {
		return nil, s.secrets.redact(fmt.Errorf("blob %s of %s: %w", d, s, err))
	}
	return b, nil
}

func (s *Source) open(ctx context.Context, d digest.Digest) (*remoteBlob, error) {
	client, err := s.httpClient(ctx)
	if err != nil {
		return nil, err
	}
	u := (&url.URL{Scheme: s.reg.base.Scheme, Host: s.reg.base.Host, Path: "/v2/" + s.repo.RepositoryStr() + "/blobs/" + d.String()}).String()
	var size int64
	err = s.reg.try(ctx, OpBlobHead, func(ctx context.Context) error {
		size, err = blobSize(ctx, client, u, d)
		return err
	})
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithCancel(context.Background())
	return &remoteBlob{src: s, client: client, d: d, url: u, size: size, ahead: s.reg.ahead, ctx: bctx, cancel: cancel}, nil
}

// httpClient runs the auth handshake once: it pings the registry for its
// challenge and, for a bearer challenge, buys a pull token for the
// repository. go-containerregistry's transport then renews the token on
// its own when the registry asks again.
func (s *Source) httpClient(ctx context.Context) (*http.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	var rt http.RoundTripper
	err := s.reg.try(ctx, OpHandshake, func(ctx context.Context) error {
		auth, err := authn.Resolve(ctx, s.reg.keychain, s.repo)
		if err != nil {
			return &configError{fmt.Errorf("credentials: %w", err)}
		}
		cfg, err := authn.Authorization(ctx, auth)
		if err != nil {
			return &configError{fmt.Errorf("credentials: %w", err)}
		}
		s.secrets.addConfig(cfg)
		rt, err = transport.NewWithContext(ctx, s.reg.reg, auth, &recorder{secrets: s.secrets, inner: s.reg.transport},
			[]string{s.repo.Scope(transport.PullScope)})
		if err != nil {
			return s.explainHandshake(ctx, fromConnection(err))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth handshake: %w", err)
	}
	s.client = &http.Client{Transport: rt}
	return s.client, nil
}

// explainHandshake finds out why a handshake failed when its error says
// too little. For loopback and private addresses go-containerregistry
// pings https and http at once and joins both failures into an error
// that cannot be unwrapped, which would hide a certificate that does not
// verify behind a retry. One plain ping tells.
func (s *Source) explainHandshake(ctx context.Context, err error) error {
	var answered *transport.Error
	if !retryable(err) || errors.As(err, &answered) {
		return err
	}
	req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, s.reg.base.String()+"/v2/", nil)
	if rerr != nil {
		return err
	}
	resp, perr := s.reg.transport.RoundTrip(req)
	if perr != nil {
		if perr := fromConnection(perr); !retryable(perr) {
			return fmt.Errorf("GET /v2/: %w", unwrapURL(perr))
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return err
}

// blobSize asks the registry for the blob's size: Content-Length of a
// HEAD, or the total of a one-byte range for a registry that leaves the
// length out.
func blobSize(ctx context.Context, client *http.Client, u string, d digest.Digest) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("HEAD: %w", fromConnection(unwrapURL(err)))
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return 0, fmt.Errorf("HEAD: the registry has no such blob: %w", fs.ErrNotExist)
	case resp.StatusCode != http.StatusOK:
		return 0, newStatusError("HEAD", resp)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		return 0, fmt.Errorf("HEAD: the registry answered with blob %s", got)
	}
	if resp.ContentLength >= 0 {
		return resp.ContentLength, nil
	}
	return sizeFromRange(ctx, client, u)
}

func sizeFromRange(ctx context.Context, client *http.Client, u string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET bytes 0-0: %w", fromConnection(unwrapURL(err)))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		// 416 is what an empty blob answers: "bytes */0".
		if cr, err := parseContentRange(resp.Header.Get("Content-Range")); err == nil && cr.total >= 0 {
			return cr.total, nil
		}
		return 0, errors.New("GET bytes 0-0: the registry gave neither a Content-Length nor a Content-Range total")
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			return resp.ContentLength, nil
		}
		return 0, errors.New("GET: the registry gives no length for the blob")
	case http.StatusNotFound:
		return 0, fmt.Errorf("GET: the registry has no such blob: %w", fs.ErrNotExist)
	}
	return 0, newStatusError("GET", resp)
}

// unwrapURL drops the URL a *url.Error quotes: after a redirect it may be
// a pre-signed storage URL, whose query is a credential.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// configError is a failure of the configuration (credentials that cannot
// be read), which no retry fixes.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }
