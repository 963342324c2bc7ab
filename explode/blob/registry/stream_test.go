package registry_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/blob/registry"
)

// Reading a blob in order costs a few requests, not one per read: after
// a plain first read, streams of 1, 2, 4, … MiB serve the rest.
func TestSequentialReadsShareRequests(t *testing.T) {
	d, want, h := bigBlob(t, 8<<20)
	log := &requestLog{next: h}
	srv := httptest.NewServer(log)
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, 64<<10)
	for off := int64(0); off < int64(len(want)); off += int64(len(p)) {
		if n, err := b.ReadAt(p, off); err != nil || !bytes.Equal(p[:n], want[off:off+int64(n)]) {
			t.Fatalf("ReadAt at %d: %d, %v (or wrong bytes)", off, n, err)
		}
	}
	got := log.rangesSeen()
	want1 := []string{"bytes=0-65535", "bytes=65536-1114111", "bytes=1114112-3211263", "bytes=3211264-7405567", "bytes=7405568-8388607"}
	if len(got) != len(want1) {
		t.Fatalf("%d requests for 128 reads: %v, want %v", len(got), got, want1)
	}
	for i := range got {
		if got[i] != want1[i] {
			t.Errorf("request %d asked for %s, want %s", i, got[i], want1[i])
		}
	}
}

// Random reads never open a stream: each asks for its own bytes only.
func TestRandomReadsDoNotReadAhead(t *testing.T) {
	d, _, h := bigBlob(t, 4<<20)
	log := &requestLog{next: h}
	srv := httptest.NewServer(log)
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, 4096)
	for _, off := range []int64{3 << 20, 1 << 20, 2 << 20, 5000, 1<<20 + 8192} {
		if _, err := b.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range log.rangesSeen() {
		var first, last int64
		if _, err := fmtSscanf(r, &first, &last); err != nil || last-first+1 != 4096 {
			t.Errorf("a random 4 KiB read asked for %s", r)
		}
	}
}

// A stream left parked is closed by Close, so an idle blob holds no
// request open at the registry.
func TestCloseReleasesStreams(t *testing.T) {
	d, _, h := bigBlob(t, 8<<20)
	var open atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64<<10)
	b.ReadAt(p, 0)
	b.ReadAt(p, int64(len(p))) // opens a 1 MiB stream and parks it
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if open.Load() != 0 {
		t.Errorf("%d requests still open at the registry after Close", open.Load())
	}
}

// WithReadAhead(0, 0) sends one request per read.
func TestReadAheadOff(t *testing.T) {
	d, _, h := bigBlob(t, 1<<20)
	log := &requestLog{next: h}
	srv := httptest.NewServer(log)
	defer srv.Close()
	b, err := source(t, srv.URL, registry.WithReadAhead(0, 0)).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, 64<<10)
	for off := int64(0); off < 1<<20; off += int64(len(p)) {
		if _, err := b.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(log.rangesSeen()); n != 16 {
		t.Errorf("%d requests for 16 reads without read-ahead", n)
	}
}
