package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Watch is an open watch of ImageStreams: the raw stream of events the
// API server sends, one JSON object per event.
type Watch struct {
	resp *http.Response
	dec  *json.Decoder
}

// WatchEvent is one event of a watch. Type is ADDED, MODIFIED, DELETED,
// BOOKMARK or ERROR.
type WatchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// WatchImageStreams watches the ImageStreams of namespace (all when "")
// from resourceVersion ("" starts with the current state as ADDED events),
// with bookmarks. A resourceVersion older than what etcd still holds
// gives a *StatusError with Code 410, either at once or as the first
// (ERROR) event, depending on whether the server's watch cache or etcd
// answers. Cancel ctx or call Close to stop the watch.
func (c *Cluster) WatchImageStreams(ctx context.Context, namespace, resourceVersion string) (*Watch, error) {
	q := url.Values{"watch": {"true"}, "allowWatchBookmarks": {"true"}}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	path := imageStreamsPath(namespace) + "?" + q.Encode()
	// A freshly started server answers 429 while its watch cache fills;
	// clients wait and ask again, as client-go's reflector does.
	deadline := time.Now().Add(watchCacheWait)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.Client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", path, err)
		}
		if resp.StatusCode == http.StatusOK {
			return &Watch{resp: resp, dec: json.NewDecoder(resp.Body)}, nil
		}
		serr := statusError(resp)
		resp.Body.Close()
		if serr.Code != http.StatusTooManyRequests || time.Now().After(deadline) {
			return nil, fmt.Errorf("watch %s: %w", path, serr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchCacheWait bounds how long a watch waits for a restarted server's
// watch cache.
const watchCacheWait = 30 * time.Second

// Next blocks until the next event. It returns io.EOF (or a read error)
// when the server ends the watch, e.g. because it was stopped, and an
// error when the watch's context ends.
func (w *Watch) Next() (WatchEvent, error) {
	var ev WatchEvent
	if err := w.dec.Decode(&ev); err != nil {
		return WatchEvent{}, err
	}
	return ev, nil
}

// Close ends the watch.
func (w *Watch) Close() error { return w.resp.Body.Close() }

// ImageStream decodes the event's object: the stream after the change, or
// its last state for DELETED; a BOOKMARK carries only the resourceVersion.
func (e WatchEvent) ImageStream() (*ImageStream, error) {
	var is ImageStream
	if err := json.Unmarshal(e.Object, &is); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", e.Type, err)
	}
	return &is, nil
}

// Err is the *StatusError an ERROR event carries (410 when the watch
// started from a resourceVersion etcd has compacted away), nil for any
// other event.
func (e WatchEvent) Err() error {
	if e.Type != "ERROR" {
		return nil
	}
	var st struct {
		Code    int    `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(e.Object, &st); err != nil {
		return fmt.Errorf("decode ERROR event: %w", err)
	}
	return &StatusError{Code: st.Code, Reason: st.Reason, Message: st.Message}
}
