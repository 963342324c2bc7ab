package registry_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/registry"
)

// bigBlob is a random blob of n bytes, pushed to a fresh in-memory
// registry whose handler is returned.
func bigBlob(t testing.TB, n int) (digest.Digest, []byte, http.Handler) {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	d := digest.FromBytes(b)
	h := inMemoryRegistry()
	push(t, h, repo, map[digest.Digest][]byte{d: b})
	return d, b, h
}

// With faults on half the requests and only two attempts, many reads
// fail; every read that succeeds has exactly the right bytes, and every
// failure is an error, never a short count passed off as success.
func TestFaultsNeverWrongBytes(t *testing.T) {
	d, want, h := bigBlob(t, 3<<20)
	upstream := httptest.NewServer(h)
	defer upstream.Close()
	proxy, err := blobtest.NewFaultProxy(upstream.URL, nil, blobtest.Faults{
		ServerError: 0.1, CutShort: 0.1, Stall: 0.05, StallBody: 0.05, IgnoreRange: 0.1, ShiftRange: 0.1,
		StallFor: 5 * time.Second, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	src := source(t, srv.URL, registry.WithRetries(2, time.Millisecond, time.Millisecond),
		registry.WithRequestTimeout(200*time.Millisecond))
	var b interface {
		ReadAt([]byte, int64) (int, error)
		Close() error
	}
	for b == nil {
		// Open may fail too: its HEAD goes through the same faults.
		if opened, err := src.Open(t.Context(), d); err == nil {
			b = opened
		}
	}
	defer b.Close()
	r := rand.New(rand.NewPCG(9, 9))
	var good, failed int
	for range 200 {
		off := r.Int64N(int64(len(want)))
		p := make([]byte, 1+r.IntN(300<<10))
		n, err := b.ReadAt(p, off)
		wantN := min(len(p), len(want)-int(off))
		switch {
		case err != nil && err != io.EOF:
			failed++
			if errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a fault was reported as a missing blob: %v", err)
			}
		case n != wantN:
			t.Fatalf("ReadAt(%d at %d) = %d, %v: a short read without an error", len(p), off, n, err)
		case !bytes.Equal(p[:n], want[off:off+int64(n)]):
			t.Fatalf("ReadAt(%d at %d) returned wrong bytes", len(p), off)
		default:
			good++
		}
	}
	if good == 0 || failed == 0 {
		t.Errorf("%d reads good, %d failed: want both, or the faults were not exercised", good, failed)
	}
	t.Logf("%d reads good, %d failed with an error; faults: %v", good, failed, proxy.Injected())
}

// A registry that keeps failing is tried exactly as often as configured,
// and the error says what it answered and how often it was asked.
func TestRetriesAreBounded(t *testing.T) {
	d, _, h := bigBlob(t, 1000)
	var gets atomic.Int64
	failing := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && failing.Load() {
			gets.Add(1)
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	src := source(t, srv.URL, registry.WithRetries(4, time.Millisecond, 4*time.Millisecond))
	b, err := src.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	failing.Store(true)
	n, err := b.ReadAt(make([]byte, 100), 10)
	if err == nil || n != 0 {
		t.Fatalf("ReadAt = %d, %v; want an error", n, err)
	}
	if gets.Load() != 4 {
		t.Errorf("%d requests, want 4 attempts", gets.Load())
	}
	for _, want := range []string{"502", "4 attempts", d.String(), "ns/stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Errorf("error %q does not wrap blob.ErrUnavailable, so it would be taken for a fault of the blob", err)
	}

}

// Open tells a registry that is down (blob.ErrUnavailable: it may pass)
// from one that refuses the credentials (it will not).
func TestOpenFailures(t *testing.T) {
	d, _, h := bigBlob(t, 100)
	var code atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(int(code.Load()))
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	src := source(t, srv.URL, registry.WithRetries(3, time.Millisecond, time.Millisecond))
	for _, c := range []struct {
		code        int
		unavailable bool
	}{{503, true}, {500, true}, {429, true}, {401, false}, {403, false}, {400, false}} {
		code.Store(int64(c.code))
		_, err := src.Open(t.Context(), d)
		if err == nil || errors.Is(err, blob.ErrUnavailable) != c.unavailable || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("HEAD answered %d: Open: %v; want unavailable=%v", c.code, err, c.unavailable)
		}
	}
	srv.Close()
	if _, err := src.Open(t.Context(), d); !errors.Is(err, blob.ErrUnavailable) {
		t.Errorf("registry gone: Open: %v, want blob.ErrUnavailable", err)
	}
}

// Failures a retry cannot mend are not retried: a blob that vanished
// after Open is missing at once.
func TestBlobGoneAfterOpen(t *testing.T) {
	d, _, h := bigBlob(t, 1000)
	var gone atomic.Bool
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gone.Load() && strings.Contains(r.URL.Path, "/blobs/") {
			gets.Add(1)
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gone.Store(true)
	if _, err := b.ReadAt(make([]byte, 10), 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadAt of a deleted blob: %v, want fs.ErrNotExist", err)
	}
	if gets.Load() != 1 {
		t.Errorf("%d requests for a missing blob, want 1", gets.Load())
	}
}

// A request that stalls beyond the request timeout is given up and tried
// again, so one stalled connection costs a timeout, not a hang.
func TestStallBeyondTimeout(t *testing.T) {
	d, want, h := bigBlob(t, 1<<20)
	var stalls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && stalls.Add(1) <= 2 {
			<-r.Context().Done() // never answers; the client must give up
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b, err := source(t, srv.URL, registry.WithRequestTimeout(100*time.Millisecond),
		registry.WithRetries(3, time.Millisecond, time.Millisecond)).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	p := make([]byte, 4096)
	if n, err := b.ReadAt(p, 5000); err != nil || n != len(p) || !bytes.Equal(p, want[5000:5000+4096]) {
		t.Fatalf("ReadAt = %d, %v (or wrong bytes)", n, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("two stalls and a success took %v, want about 2 timeouts of 100ms", took)
	}
}

// Close ends a read that is waiting on the registry.
func TestCloseCancelsARead(t *testing.T) {
	d, _, h := bigBlob(t, 1000)
	var stall atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stall.Load() {
			<-r.Context().Done()
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d) // a 30 s request timeout
	if err != nil {
		t.Fatal(err)
	}
	stall.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := b.ReadAt(make([]byte, 10), 0)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadAt cut off by Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the read")
	}
}
