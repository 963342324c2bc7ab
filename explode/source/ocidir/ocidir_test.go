package ocidir_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/source/ocidir"
	"github.com/explodefs/explodefs/test/imagegen"
)

type sink struct {
	mu      sync.Mutex
	streams map[string]source.Stream
	failed  map[string]error
	synced  bool
}

func (s *sink) StreamFailed(ns, name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = map[string]error{}
	}
	s.failed[ns+"/"+name] = err
}

func (s *sink) Synced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = true
}

func (s *sink) StreamChanged(st source.Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[st.Key()] = st
}

func (s *sink) StreamRemoved(ns, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, ns+"/"+name)
}

func (s *sink) snapshot() map[string]source.Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]source.Stream{}
	for k, v := range s.streams {
		out[k] = v
	}
	return out
}

// Layouts whose names cannot be shown safely, and tags that are not tags,
// are left out; the rest of the tree is still reported.
func TestScanSkipsWhatItCannotShow(t *testing.T) {
	root := t.TempDir()
	img := imagegen.DemoImage()
	for _, p := range []string{"good/app", "Bad_NS/app", "good/.hidden", "good/@sha256:x"} {
		if _, err := imagegen.WriteImage(filepath.Join(root, p), "latest", img); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := imagegen.WriteImage(filepath.Join(root, "good/app"), "bad:tag", img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "good", "not-a-layout"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "good", "broken"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "good", "broken", "index.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}

	s := runSource(t, ocidir.New(root))

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(s.snapshot()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	got := s.snapshot()
	if len(got) != 1 {
		t.Fatalf("streams = %v; want only good/app", got)
	}
	app := got["good/app"]
	if len(app.Tags) != 1 || app.Tags["latest"] == "" {
		t.Errorf("tags = %v; want only latest (bad:tag is not a tag)", app.Tags)
	}
	if len(app.History) != 1 {
		t.Errorf("history = %v; want the one image both entries name", app.History)
	}
}

func (s *sink) state() (synced bool, failed map[string]error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced, maps.Clone(s.failed)
}

// The first full scan is reported before Synced; a broken layout is
// reported as failed, and a FIFO index.json neither blocks the scan nor
// hides the other streams.
func TestFirstScanThenSynced(t *testing.T) {
	root := t.TempDir()
	if _, err := imagegen.WriteImage(filepath.Join(root, "ns", "app"), "latest", imagegen.DemoImage()); err != nil {
		t.Fatal(err)
	}
	for _, broken := range []string{"torn", "fifo"} {
		if err := os.MkdirAll(filepath.Join(root, "ns", broken), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "ns", "torn", "index.json"), []byte(`{"schemaVersion": 2, "manif`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "ns", "fifo", "index.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := runSource(t, ocidir.New(root))

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if synced, _ := s.state(); synced {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	synced, failed := s.state()
	if !synced {
		t.Fatal("no Synced after the first scan")
	}
	if _, ok := s.snapshot()["ns/app"]; !ok {
		t.Error("Synced came before the stream of the first scan")
	}
	for _, broken := range []string{"ns/torn", "ns/fifo"} {
		if failed[broken] == nil {
			t.Errorf("%s not reported as failed (failed: %v)", broken, failed)
		}
	}
	if err := failed["ns/fifo"]; err != nil && !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO index.json reported as %v", err)
	}
}

// An index.json caught mid-rewrite keeps the stream's last good state.
func TestTornIndexJSONKeepsLastState(t *testing.T) {
	root := t.TempDir()
	layout := filepath.Join(root, "ns", "app")
	if _, err := imagegen.WriteImage(layout, "latest", imagegen.DemoImage()); err != nil {
		t.Fatal(err)
	}
	s := runSource(t, ocidir.New(root, ocidir.WithResync(50*time.Millisecond)))
	waitFor(t, "the stream", func() bool { _, ok := s.snapshot()["ns/app"]; return ok })
	before := s.snapshot()["ns/app"]

	whole, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "index.json"), whole[:len(whole)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failure", func() bool { _, failed := s.state(); return failed["ns/app"] != nil })
	time.Sleep(200 * time.Millisecond) // a few resyncs
	if got, ok := s.snapshot()["ns/app"]; !ok || !got.Equal(before) {
		t.Fatalf("stream after a torn index.json: %+v, %v; want its last good state", got, ok)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// runSource runs src into a new sink until the test ends.
func runSource(t *testing.T, src *ocidir.Source) *sink {
	t.Helper()
	s := &sink{streams: map[string]source.Stream{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(ctx, s) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}
