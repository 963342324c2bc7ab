package badgerstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

func TestConformance(t *testing.T) {
	indextest.Run(t, func(t *testing.T) index.Store { return open(t, t.TempDir()) })
}

func open(t *testing.T, dir string) *badgerstore.Store {
	t.Helper()
	s, err := badgerstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A pass cut short by a crash must leave nothing that counts as indexed,
// and the next pass over the same layer must start clean.
func TestUnfinishedPassSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := indextest.LayerDigest(1)

	s := open(t, dir)
	w, err := s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range indextest.SampleEntries(2000) {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	// Abandon the writer without Commit or Abort, as a crash would.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	defer s.Close()
	if _, err := s.Layer(ctx, d); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("unfinished layer visible after reopen: %v", err)
	}
	w, err = s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range indextest.SampleEntries(3) {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(index.LayerInfo{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.Entries(ctx, d, func(index.Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("after re-pass: %d entries, want 3 (leftovers of the unfinished pass leaked)", n)
	}
}

func TestCommittedLayerSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := indextest.LayerDigest(2)
	s := open(t, dir)
	w, _ := s.NewLayerWriter(ctx, d)
	for _, e := range indextest.SampleEntries(100) {
		_ = w.AddEntry(e)
	}
	if err := w.Commit(index.LayerInfo{Compression: index.Gzip}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, dir)
	defer s.Close()
	info, err := s.Layer(ctx, d)
	if err != nil || info.Entries != 100 || info.Compression != index.Gzip {
		t.Fatalf("after reopen: %+v, %v", info, err)
	}
}

// An index of another schema is dropped, not misread.
func TestOtherSchemaIsDropped(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := indextest.LayerDigest(3)
	s := open(t, dir)
	w, _ := s.NewLayerWriter(ctx, d)
	if err := w.Commit(index.LayerInfo{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSchemaForTest("0"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, dir)
	defer s.Close()
	if _, err := s.Layer(ctx, d); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("layer of an old schema still visible: %v", err)
	}
}
