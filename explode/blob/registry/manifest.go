package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// maxManifest bounds a manifest read; registries refuse larger ones.
const maxManifest = 4 << 20

// manifestTypes are the media types asked for. Without them a registry may
// convert a manifest to an older schema, whose digest differs.
var manifestTypes = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// openManifest reads a manifest by digest. The daemon asks a source for
// manifests by digest like for any blob, as distribution's filesystem
// storage holds them, but the API serves them apart, under /manifests/.
// The bytes are checked against the digest before they are returned.
func (s *Source) openManifest(ctx context.Context, d digest.Digest) (blob.Blob, error) {
	client, err := s.httpClient(ctx)
	if err != nil {
		return nil, err
	}
	u := (&url.URL{Scheme: s.reg.base.Scheme, Host: s.reg.base.Host, Path: "/v2/" + s.repo.RepositoryStr() + "/manifests/" + d.String()}).String()
	var body []byte
	err = s.reg.try(ctx, OpManifest, func(ctx context.Context) error {
		body, err = fetchManifest(ctx, client, u)
		return err
	})
	if err != nil {
		return nil, err
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return nil, fmt.Errorf("manifest: the registry's %d bytes hash to %s", len(body), got)
	}
	return memBlob{bytes.NewReader(body)}, nil
}

func fetchManifest(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestTypes)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET manifest: %w", fromConnection(unwrapURL(err)))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET manifest: the registry has no such manifest: %w", fs.ErrNotExist)
	case resp.StatusCode != http.StatusOK:
		return nil, newStatusError("GET manifest", resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, &shortBodyError{fmt.Errorf("GET manifest: %w", err)}
	}
	if len(body) > maxManifest {
		return nil, fmt.Errorf("GET manifest: more than %d bytes", maxManifest)
	}
	return body, nil
}

// memBlob is a manifest held in memory.
type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }

// openBlobOrManifest opens d as a blob, and as a manifest when the
// registry has no blob of that digest.
func (s *Source) openBlobOrManifest(ctx context.Context, d digest.Digest) (blob.Blob, error) {
	b, err := s.open(ctx, d)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	m, merr := s.openManifest(ctx, d)
	if merr != nil {
		if errors.Is(merr, fs.ErrNotExist) {
			// Neither: report the blob's absence. Only now is the
			// 404 an error: every manifest read by digest costs one
			// on the blob first.
			s.reg.noteError(ctx, OpBlobHead, err)
			return nil, err
		}
		return nil, merr
	}
	return m, nil
}
