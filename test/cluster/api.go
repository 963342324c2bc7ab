package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// StatusError is an answer of the API server other than 2xx, or an ERROR
// event of a watch, with the fields of the Status object it carries.
type StatusError struct {
	// Code is the HTTP status: 404 not found, 409 conflict, 410 when a
	// resourceVersion is older than what etcd still holds.
	Code int
	// Reason is the Status reason, e.g. NotFound, Conflict, AlreadyExists,
	// Expired, Gone.
	Reason  string
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("API server: %d %s: %s", e.Code, e.Reason, e.Message)
}

// StatusCode is the HTTP status an error of this package carries (through
// wrapping, too), or 0 for other errors.
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Do sends a request to the API server as the admin. path is absolute
// ("/apis/…", with a query if any). body, if not nil, is sent as JSON
// (as a JSON merge patch for PATCH); a 2xx answer is decoded into out if
// out is not nil; any other answer is a *StatusError.
func (c *Cluster) Do(ctx context.Context, method, path string, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		contentType := "application/json"
		if method == http.MethodPatch {
			contentType = "application/merge-patch+json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %w", method, path, statusError(resp))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func statusError(resp *http.Response) *StatusError {
	body, _ := readSome(resp.Body)
	var st struct {
		Code    int    `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) != nil || st.Message == "" {
		st.Message = strings.TrimSpace(string(body))
	}
	return &StatusError{Code: resp.StatusCode, Reason: st.Reason, Message: st.Message}
}

// readSome reads up to 64 KiB: enough for any error the server sends, and
// bounded in case something else answers.
func readSome(r io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, 64<<10))
}

// imageStreamsPath is the collection of ImageStreams in namespace, or of
// all namespaces when namespace is "".
func imageStreamsPath(namespace string) string {
	if namespace == "" {
		return "/apis/" + Group + "/" + Version + "/imagestreams"
	}
	return "/apis/" + Group + "/" + Version + "/namespaces/" + url.PathEscape(namespace) + "/imagestreams"
}

func imageStreamPath(namespace, name string) string {
	return imageStreamsPath(namespace) + "/" + url.PathEscape(name)
}

// CreateImageStream creates is in its namespace (no Namespace object is
// needed) and returns it as stored. Its status is dropped by the server;
// write it with UpdateImageStreamStatus or SetImageStreamStatus.
func (c *Cluster) CreateImageStream(ctx context.Context, is *ImageStream) (*ImageStream, error) {
	obj := withTypeMeta(is)
	var out ImageStream
	if err := c.Do(ctx, http.MethodPost, imageStreamsPath(is.Metadata.Namespace), obj, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetImageStream reads one ImageStream.
func (c *Cluster) GetImageStream(ctx context.Context, namespace, name string) (*ImageStream, error) {
	var out ImageStream
	if err := c.Do(ctx, http.MethodGet, imageStreamPath(namespace, name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListImageStreams lists the ImageStreams of namespace, or of all
// namespaces when namespace is "".
func (c *Cluster) ListImageStreams(ctx context.Context, namespace string) (*ImageStreamList, error) {
	var out ImageStreamList
	if err := c.Do(ctx, http.MethodGet, imageStreamsPath(namespace), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateImageStream replaces is's metadata and spec; the server keeps the
// stored status. is.Metadata.ResourceVersion must be the one read, or the
// server answers 409 Conflict.
func (c *Cluster) UpdateImageStream(ctx context.Context, is *ImageStream) (*ImageStream, error) {
	var out ImageStream
	if err := c.Do(ctx, http.MethodPut, imageStreamPath(is.Metadata.Namespace, is.Metadata.Name), withTypeMeta(is), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateImageStreamStatus writes is's status through the status
// subresource, the only way a status is written, as OpenShift's registry
// does after a push. is.Metadata.ResourceVersion must be the one read.
func (c *Cluster) UpdateImageStreamStatus(ctx context.Context, is *ImageStream) (*ImageStream, error) {
	var out ImageStream
	path := imageStreamPath(is.Metadata.Namespace, is.Metadata.Name) + "/status"
	if err := c.Do(ctx, http.MethodPut, path, withTypeMeta(is), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetImageStreamStatus replaces the status of a stream with status, reading
// the stream first and trying again when another writer got in between.
func (c *Cluster) SetImageStreamStatus(ctx context.Context, namespace, name string, status ImageStreamStatus) (*ImageStream, error) {
	for {
		is, err := c.GetImageStream(ctx, namespace, name)
		if err != nil {
			return nil, err
		}
		is.Status = status
		out, err := c.UpdateImageStreamStatus(ctx, is)
		if StatusCode(err) != http.StatusConflict {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// DeleteImageStream deletes one ImageStream.
func (c *Cluster) DeleteImageStream(ctx context.Context, namespace, name string) error {
	return c.Do(ctx, http.MethodDelete, imageStreamPath(namespace, name), nil, nil)
}

func withTypeMeta(is *ImageStream) *ImageStream {
	obj := *is
	obj.APIVersion = Group + "/" + Version
	obj.Kind = "ImageStream"
	return &obj
}
