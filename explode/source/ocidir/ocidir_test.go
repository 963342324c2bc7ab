package ocidir_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
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

	s := &sink{streams: map[string]source.Stream{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ocidir.New(root).Run(ctx, s) }()
	defer func() { cancel(); <-done }()

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
