package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of Docker's manifest list and image manifest, which OCI
// layouts may hold as well; image-spec does not define them.
const (
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

// ManifestMediaTypes is an Accept header for manifests of every kind the
// layouts hold. Without it, distribution answers with what an old client
// would understand, not what was pushed.
const ManifestMediaTypes = ispec.MediaTypeImageManifest + ", " + ispec.MediaTypeImageIndex + ", " +
	mediaTypeDockerManifest + ", " + mediaTypeDockerManifestList

// Do sends req to the registry with its credentials, if it has any, and
// through a transport that trusts its CA. req's URL is usually
// URL()+"/v2/…".
func (r *Registry) Do(req *http.Request) (*http.Response, error) {
	if r.Username != "" {
		req.SetBasicAuth(r.Username, r.Password)
	}
	return r.Client.Do(req)
}

// PushLayout pushes the image that tag names in the OCI layout at
// layoutDir (an image manifest, or an image index with its manifests) to
// <Host>/<repository>:<tag>, byte for byte, so the registry serves it under
// the same digest, which it returns. test/imagegen writes such layouts.
//
// It speaks the registry API with net/http (monolithic blob uploads, then
// the manifests) rather than through go-containerregistry's remote
// package, whose dependencies the root module does not carry.
func (r *Registry) PushLayout(ctx context.Context, layoutDir, tag, repository string) (digest.Digest, error) {
	var index ispec.Index
	data, err := os.ReadFile(filepath.Join(layoutDir, ispec.ImageIndexFile))
	if err == nil {
		err = json.Unmarshal(data, &index)
	}
	if err != nil {
		return "", fmt.Errorf("push %s:%s from %s: %w", repository, tag, layoutDir, err)
	}
	for _, desc := range index.Manifests {
		if desc.Annotations[ispec.AnnotationRefName] != tag {
			continue
		}
		p := pusher{r: r, ctx: ctx, layoutDir: layoutDir, repository: repository}
		if err := p.pushManifest(desc, tag); err != nil {
			return "", fmt.Errorf("push %s to %s: %w", desc.Digest, r.Reference(repository, tag), err)
		}
		return desc.Digest, nil
	}
	return "", fmt.Errorf("push %s:%s: layout %s has no tag %q", repository, tag, layoutDir, tag)
}

type pusher struct {
	r          *Registry
	ctx        context.Context
	layoutDir  string
	repository string
}

func (p pusher) blobFile(d digest.Digest) string {
	return filepath.Join(p.layoutDir, ispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// pushManifest pushes what desc's manifest refers to, then the manifest
// itself under ref (a tag, or its digest for an index's children), since
// the registry refuses a manifest whose blobs it lacks.
func (p pusher) pushManifest(desc ispec.Descriptor, ref string) error {
	raw, err := os.ReadFile(p.blobFile(desc.Digest))
	if err != nil {
		return err
	}
	var content struct {
		MediaType string             `json:"mediaType"`
		Config    *ispec.Descriptor  `json:"config"`
		Layers    []ispec.Descriptor `json:"layers"`
		Manifests []ispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &content); err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	for _, child := range content.Manifests {
		if err := p.pushManifest(child, child.Digest.String()); err != nil {
			return err
		}
	}
	blobs := content.Layers
	if content.Config != nil {
		blobs = append(blobs, *content.Config)
	}
	for _, blob := range blobs {
		if err := p.pushBlob(blob.Digest); err != nil {
			return err
		}
	}
	mediaType := desc.MediaType
	if mediaType == "" {
		mediaType = content.MediaType
	}
	resp, err := p.send(http.MethodPut, p.path("manifests/"+ref), mediaType, bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("manifest %s: %s", desc.Digest, answer(resp))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != desc.Digest.String() {
		return fmt.Errorf("manifest %s stored as %s", desc.Digest, got)
	}
	return nil
}

// pushBlob uploads one blob of the layout.
func (p pusher) pushBlob(d digest.Digest) error {
	f, err := os.Open(p.blobFile(d))
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	return p.r.PushBlob(p.ctx, p.repository, d, f, info.Size())
}

// PushBlob uploads size bytes of content to repository as blob d, in a
// single request (POST to start the upload, PUT with the digest to finish
// it), unless the repository has d already. The registry refuses content
// that does not match d.
func (r *Registry) PushBlob(ctx context.Context, repository string, d digest.Digest, content io.Reader, size int64) error {
	p := pusher{r: r, ctx: ctx, repository: repository}
	resp, err := p.send(http.MethodHead, p.path("blobs/"+d.String()), "", nil, 0)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	resp, err = p.send(http.MethodPost, p.path("blobs/uploads/"), "", nil, 0)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("push blob %s: start upload: %s", d, answer(resp))
	}
	location, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("push blob %s: upload location: %w", d, err)
	}
	q := location.Query()
	q.Set("digest", d.String())
	location.RawQuery = q.Encode()
	resp, err = p.send(http.MethodPut, location.String(), "application/octet-stream", content, size)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("push blob %s: upload: %s", d, answer(resp))
	}
	return nil
}

func (p pusher) path(rest string) string {
	return p.r.URL() + "/v2/" + p.repository + "/" + rest
}

func (p pusher) send(method, target, contentType string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(p.ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := p.r.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(target), err)
	}
	return resp, nil
}

// redact drops the query of an upload URL: it holds the upload's state
// token, which is noise in an error.
func redact(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		return target
	}
	u.RawQuery = ""
	return u.String()
}

// answer describes a registry's unexpected answer with the start of its
// error body.
func answer(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return strings.TrimSpace(resp.Status + " " + string(body))
}
