package registry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob/registry"
)

// errorCounts records what RegistryError hears, as "op/class".
type errorCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *errorCounts) RegistryError(op, class string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[op+"/"+class]++
}

// take returns the counts so far and starts over.
func (c *errorCounts) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func sameCounts(got, want map[string]int) bool {
	return fmt.Sprint(got) == fmt.Sprint(want)
}

// Every failed request is reported with what it asked for and how it
// failed, retried attempts included; a manifest's blob probe and reads
// the caller gave up on are not.
func TestErrorObserver(t *testing.T) {
	d, want, h := bigBlob(t, 10_000)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	push(t, h, repo, map[digest.Digest][]byte{digest.FromBytes(config): config})
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.FromBytes(config).String() + `","size":` + strconv.Itoa(len(config)) + `},"layers":[]}`)
	putManifest(t, h, "latest", "application/vnd.oci.image.manifest.v1+json", manifest)

	var failGets, headCode atomic.Int64
	var stall atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blobs := strings.Contains(r.URL.Path, "/blobs/")
		switch {
		case blobs && r.Method == http.MethodHead && headCode.Load() != 0:
			w.WriteHeader(int(headCode.Load()))
			return
		case blobs && r.Method == http.MethodGet && stall.Load():
			<-r.Context().Done()
			return
		case blobs && r.Method == http.MethodGet && failGets.Add(-1) >= 0:
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	counts := &errorCounts{n: map[string]int{}}
	src := source(t, srv.URL, registry.WithErrorObserver(counts), registry.WithReadAhead(0, 0),
		registry.WithRetries(4, time.Millisecond, time.Millisecond))
	ctx := context.Background()

	b, err := src.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := counts.take(); len(got) != 0 {
		t.Errorf("a handshake and an open that worked reported %v", got)
	}

	failGets.Store(2)
	p := make([]byte, 100)
	if _, err := b.ReadAt(p, 10); err != nil || string(p) != string(want[10:110]) {
		t.Fatalf("a read that succeeds on its third attempt: %v", err)
	}
	if got, wantCounts := counts.take(), map[string]int{"blob_read/5xx": 2}; !sameCounts(got, wantCounts) {
		t.Errorf("two 502s before a good answer: reported %v, want %v", got, wantCounts)
	}

	m, err := src.Open(ctx, digest.FromBytes(manifest))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if got := counts.take(); len(got) != 0 {
		t.Errorf("a manifest read by digest (its blob probe answers 404) reported %v", got)
	}

	if _, err := src.Open(ctx, digest.FromString("neither a blob nor a manifest")); err == nil {
		t.Fatal("opened a digest the registry lacks")
	}
	if got, wantCounts := counts.take(), map[string]int{"blob_head/not_found": 1}; !sameCounts(got, wantCounts) {
		t.Errorf("a digest that is neither blob nor manifest: reported %v, want %v", got, wantCounts)
	}

	headCode.Store(http.StatusForbidden)
	if _, err := src.Open(ctx, d); err == nil {
		t.Fatal("opened a blob whose HEAD answers 403")
	}
	headCode.Store(0)
	if got, wantCounts := counts.take(), map[string]int{"blob_head/4xx": 1}; !sameCounts(got, wantCounts) {
		t.Errorf("a 403, which is not retried: reported %v, want %v", got, wantCounts)
	}

	// A read cut off by Close is the caller's doing, not the registry's.
	stall.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := b.ReadAt(p, 2000)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	b.Close()
	if err := <-done; err == nil || err == io.EOF {
		t.Fatalf("a read cut off by Close: %v", err)
	}
	if got := counts.take(); len(got) != 0 {
		t.Errorf("a read cut off by Close reported %v", got)
	}
}

// A read-ahead stream whose request fails is reported too, although a
// plain read takes over and the read succeeds.
func TestErrorObserverStreams(t *testing.T) {
	d, want, h := bigBlob(t, 100_000)
	var failGets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet && failGets.Add(-1) >= 0 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	counts := &errorCounts{n: map[string]int{}}
	src := source(t, srv.URL, registry.WithErrorObserver(counts), registry.WithReadAhead(4<<10, 16<<10),
		registry.WithRetries(3, time.Millisecond, time.Millisecond))
	b, err := src.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, 100)
	if _, err := b.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	failGets.Store(1) // the stream that the next, sequential read opens
	if _, err := b.ReadAt(p, 100); err != nil || string(p) != string(want[100:200]) {
		t.Fatalf("a sequential read whose stream fails: %v", err)
	}
	if got, wantCounts := counts.take(), map[string]int{"blob_read/5xx": 1}; !sameCounts(got, wantCounts) {
		t.Errorf("a stream answered 503: reported %v, want %v", got, wantCounts)
	}
}
