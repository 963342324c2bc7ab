package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// bumpKey is written to move etcd's revision on. It lies outside the API
// server's /registry prefix, so no watch of the server sees it.
const bumpKey = "/explodefs-test/bump"

// CompactEtcd makes every resourceVersion handed out so far too old: it
// writes bumpKey twice and compacts etcd's history up to the newest
// revision, the way the API server's own compactor does every five minutes.
// A watch that starts from an older resourceVersion then gets 410 Gone from
// etcd. Two writes, because a compaction at revision R keeps R itself: a
// client whose last resourceVersion is R-2 would start its watch at R-1,
// which is gone, while R-1 would still start at R.
//
// With the API server's watch cache (the default) a new watch is answered
// from the cache, which may still hold the old revisions, and open watches
// go on; ForceRelist, or --watch-cache=false through WithAPIServerArgs,
// makes the 410 certain. Without the watch cache, an open watch that etcd
// is still bringing up to date (one opened a moment before) may end with a
// 410 ERROR event as well; one that is up to date goes on.
func (c *Cluster) CompactEtcd(ctx context.Context) (revision int64, err error) {
	for range 2 {
		revision, err = c.etcdPut(ctx, bumpKey, strconv.FormatInt(time.Now().UnixNano(), 10))
		if err != nil {
			return 0, err
		}
	}
	err = c.etcdCall(ctx, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(revision, 10), "physical": true}, nil)
	if err != nil && !strings.Contains(err.Error(), "required revision has been compacted") {
		return 0, fmt.Errorf("compact etcd at revision %d: %w", revision, err)
	}
	return revision, nil
}

// ForceRelist makes every client of the API server relist, as a real
// cluster does after a long disconnection: it compacts etcd (CompactEtcd)
// and restarts the API server. Every open watch is cut; a client that
// watches again from the resourceVersion it last saw gets 410 Gone (from
// the restarted server's watch cache, which starts at the current
// revision, or from etcd) and has to list anew.
func (c *Cluster) ForceRelist(ctx context.Context) error {
	if _, err := c.CompactEtcd(ctx); err != nil {
		return err
	}
	return c.RestartAPIServer()
}

// etcdPut writes key through etcd's grpc-gateway and returns the revision
// of the write.
func (c *Cluster) etcdPut(ctx context.Context, key, value string) (int64, error) {
	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	// The gateway speaks protobuf's JSON mapping: bytes are base64 and
	// int64 values are strings.
	err := c.etcdCall(ctx, "/v3/kv/put", map[string]any{"key": []byte(key), "value": []byte(value)}, &resp)
	if err != nil {
		return 0, fmt.Errorf("etcd put %s: %w", key, err)
	}
	rev, err := strconv.ParseInt(resp.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd put %s: revision %q: %w", key, resp.Header.Revision, err)
	}
	return rev, nil
}

func (c *Cluster) etcdCall(ctx context.Context, path string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.EtcdURL+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := readSome(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, bytes.TrimSpace(answer))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(answer, out)
}

// getJSON GETs url with client and decodes a 200 answer into out.
func getJSON(ctx context.Context, client *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := readSome(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, out)
}
