// Package indextest is the conformance suite for index.Store
// implementations. Every implementation runs the same Run, so the lazy
// reader and the merged view can rely on one set of rules.
package indextest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// NewStore returns an empty store for one subtest; the suite closes it.
type NewStore func(t *testing.T) index.Store

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s index.Store)
	}{
		{"UncommittedLayerIsInvisible", testUncommittedInvisible},
		{"CommitRoundTrip", testCommitRoundTrip},
		{"AbortDiscards", testAbortDiscards},
		{"RewriteReplaces", testRewriteReplaces},
		{"DeleteLayer", testDeleteLayer},
		{"LayersListsCompletedInDigestOrder", testLayersList},
		{"LayersCallbackErrorStops", testLayersCallbackError},
		{"ConcurrentWriters", testConcurrentWriters},
		{"ClearingDoesNotDisturbOtherWriters", testClearingDoesNotDisturbOtherWriters},
		{"ManyEntries", testManyEntries},
		{"CallbackErrorStops", testCallbackErrorStops},
		{"CancelledContextStops", testCancelledContext},
		{"WriterRefusesUseAfterCommit", testUseAfterCommit},
		{"ContentObjectsRoundTrip", testContentObjectsRoundTrip},
		{"ContentObjectsReplace", testContentObjectsReplace},
		{"ContentObjectsKeepLayersApart", testContentObjectsLayersApart},
		{"ContentObjectNotFound", testContentObjectNotFound},
		{"ContentObjectsNegativeOffsetRefused", testContentObjectsNegativeOffset},
		{"ContentObjectsNotAliased", testContentObjectsNotAliased},
		{"ManyContentObjects", testManyContentObjects},
		{"DeleteLayerDropsContentObjects", testDeleteLayerDropsContentObjects},
		{"ReindexDropsContentObjects", testReindexDropsContentObjects},
		{"ContentObjectsCallbackErrorStops", testContentObjectsCallbackError},
		{"ContentObjectsCancelledContext", testContentObjectsCancelled},
		{"MaterializationRoundTrip", testMaterializationRoundTrip},
		{"MaterializationDelete", testMaterializationDelete},
		{"MaterializationsInDigestOrder", testMaterializationsOrder},
		{"MaterializationsCallbackErrorStops", testMaterializationsCallbackError},
		{"MaterializationsCancelledContext", testMaterializationsCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

// LayerDigest returns a distinct, valid layer digest for n.
func LayerDigest(n int) digest.Digest {
	return digest.FromString(fmt.Sprintf("layer-%d", n))
}

// SampleEntries returns n entries that use every field.
func SampleEntries(n int) []index.Entry {
	types := []index.EntryType{index.TypeRegular, index.TypeDir, index.TypeSymlink,
		index.TypeHardlink, index.TypeChar, index.TypeBlock, index.TypeFifo}
	out := make([]index.Entry, n)
	for i := range out {
		e := index.Entry{
			Path:     fmt.Sprintf("dir%d/sübdir/file-%d", i%7, i),
			Type:     types[i%len(types)],
			Mode:     uint32(0o7777 & (i*0o1111 + 0o644)),
			UID:      uint32(i * 1000),
			GID:      uint32(65534 - i),
			Size:     int64(i) * 4097,
			ModTime:  time.Unix(1700000000+int64(i), int64(i%1000)*1000+7).UTC(),
			DevMajor: uint32(i % 9),
			DevMinor: uint32(i % 255),
			Offset:   int64(i) * 8192,
		}
		if e.Type == index.TypeSymlink || e.Type == index.TypeHardlink {
			e.Linkname = fmt.Sprintf("../target-%d", i)
		}
		if i%3 == 0 {
			e.Xattrs = []index.Xattr{
				{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
				{Name: "user.k", Value: []byte(fmt.Sprint(i))},
			}
		}
		out[i] = e
	}
	return out
}

// SampleSpans returns n spans; every third starts a gzip member and has no window.
func SampleSpans(n int) []index.Span {
	out := make([]index.Span, n)
	for i := range out {
		sp := index.Span{Out: int64(i) << 20, In: int64(i) * 400000, Bits: uint8(i % 8)}
		sp.Digests = make([]byte, 32*(1+i%16))
		sp.Digests[0], sp.Digests[len(sp.Digests)-1] = byte(i), byte(i>>8)
		if i%3 == 0 {
			sp.Bits, sp.MemberStart = 0, true
		} else {
			sp.Window = []byte(fmt.Sprintf("window-%d", i))
		}
		out[i] = sp
	}
	return out
}

func write(t *testing.T, s index.Store, d digest.Digest, entries []index.Entry, spans []index.Span) {
	t.Helper()
	ctx := context.Background()
	w, err := s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, sp := range spans {
		if err := w.AddSpan(sp); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(index.LayerInfo{Compression: index.Gzip, CompressedSize: 123, UncompressedSize: 4567}); err != nil {
		t.Fatal(err)
	}
}

func readEntries(t *testing.T, s index.Store, d digest.Digest) []index.Entry {
	t.Helper()
	var got []index.Entry
	if err := s.Entries(context.Background(), d, func(e index.Entry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("Entries(%s): %v", d, err)
	}
	return got
}

func testUncommittedInvisible(t *testing.T, s index.Store) {
	ctx := context.Background()
	d := LayerDigest(1)
	w, err := s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range SampleEntries(10) {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Layer(ctx, d); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("Layer before commit: got %v, want ErrNotFound", err)
	}
	if err := s.Entries(ctx, d, func(index.Entry) error { return nil }); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("Entries before commit: got %v, want ErrNotFound", err)
	}
	if _, err := s.Spans(ctx, d); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("Spans before commit: got %v, want ErrNotFound", err)
	}
	_ = w.Abort()
}

func testCommitRoundTrip(t *testing.T, s index.Store) {
	ctx := context.Background()
	d := LayerDigest(2)
	entries, spans := SampleEntries(50), SampleSpans(10)
	write(t, s, d, entries, spans)

	info, err := s.Layer(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	want := index.LayerInfo{Digest: d, Compression: index.Gzip, CompressedSize: 123,
		UncompressedSize: 4567, Entries: 50, Spans: 10}
	if info != want {
		t.Errorf("Layer = %+v, want %+v", info, want)
	}
	if got := readEntries(t, s, d); !reflect.DeepEqual(got, entries) {
		t.Errorf("entries differ after round trip:\n got %+v\nwant %+v", got[:2], entries[:2])
	}
	gotSpans, err := s.Spans(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotSpans) != len(spans) {
		t.Fatalf("Spans returned %d, want %d", len(gotSpans), len(spans))
	}
	for i, sp := range gotSpans {
		wantSpan := spans[i]
		wantSpan.Window = nil
		if len(sp.Window) != 0 {
			t.Errorf("span %d: Spans returned a window", i)
		}
		sp.Window = nil
		if !reflect.DeepEqual(sp, wantSpan) {
			t.Errorf("span %d = %+v, want %+v", i, sp, wantSpan)
		}
		w, err := s.SpanWindow(ctx, d, i)
		if err != nil {
			t.Fatalf("SpanWindow(%d): %v", i, err)
		}
		if string(w) != string(spans[i].Window) {
			t.Errorf("SpanWindow(%d) = %q, want %q", i, w, spans[i].Window)
		}
	}
}

func testAbortDiscards(t *testing.T, s index.Store) {
	ctx := context.Background()
	d := LayerDigest(3)
	w, err := s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range SampleEntries(20) {
		_ = w.AddEntry(e)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Layer(ctx, d); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("Layer after abort: %v, want ErrNotFound", err)
	}
	write(t, s, d, SampleEntries(5), SampleSpans(2))
	if got := readEntries(t, s, d); len(got) != 5 {
		t.Errorf("after abort and rewrite: %d entries, want 5", len(got))
	}
}

func testRewriteReplaces(t *testing.T, s index.Store) {
	d := LayerDigest(4)
	write(t, s, d, SampleEntries(30), SampleSpans(6))
	write(t, s, d, SampleEntries(3), SampleSpans(1))
	if got := readEntries(t, s, d); !reflect.DeepEqual(got, SampleEntries(3)) {
		t.Errorf("rewrite kept old entries: got %d entries, want 3", len(got))
	}
	spans, err := s.Spans(context.Background(), d)
	if err != nil || len(spans) != 1 {
		t.Errorf("rewrite: %d spans, err %v; want 1", len(spans), err)
	}
}

func testDeleteLayer(t *testing.T, s index.Store) {
	ctx := context.Background()
	keep, gone := LayerDigest(5), LayerDigest(6)
	write(t, s, keep, SampleEntries(4), SampleSpans(2))
	write(t, s, gone, SampleEntries(4), SampleSpans(2))
	if err := s.DeleteLayer(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Layer(ctx, gone); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("deleted layer still there: %v", err)
	}
	if got := readEntries(t, s, keep); len(got) != 4 {
		t.Errorf("other layer lost entries: %d", len(got))
	}
}

func testLayersList(t *testing.T, s index.Store) {
	ctx := context.Background()
	var want []digest.Digest
	for i := range 5 {
		d := LayerDigest(200 + i)
		write(t, s, d, SampleEntries(i+1), SampleSpans(1))
		want = append(want, d)
	}
	// Neither a deleted layer nor an unfinished pass is listed.
	if err := s.DeleteLayer(ctx, want[2]); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 2, 3)
	w, err := s.NewLayerWriter(ctx, LayerDigest(300))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AddEntry(SampleEntries(1)[0]); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	var got []digest.Digest
	err = s.Layers(ctx, func(info index.LayerInfo) error {
		got = append(got, info.Digest)
		if info.Compression != index.Gzip || info.CompressedSize != 123 || info.Entries < 1 {
			t.Errorf("layer %s listed with %+v", info.Digest, info)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Layers listed %v, want %v", got, want)
	}
}

func testLayersCallbackError(t *testing.T, s index.Store) {
	for i := range 3 {
		write(t, s, LayerDigest(400+i), SampleEntries(1), nil)
	}
	stop := errors.New("stop")
	n := 0
	err := s.Layers(context.Background(), func(index.LayerInfo) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Layers after the callback failed: %d calls, err %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Layers(ctx, func(index.LayerInfo) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Layers with a cancelled context: %v", err)
	}
}

func testConcurrentWriters(t *testing.T, s index.Store) {
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx := context.Background()
			w, err := s.NewLayerWriter(ctx, LayerDigest(100+i))
			if err != nil {
				t.Error(err)
				return
			}
			for _, e := range SampleEntries(500 + i) {
				if err := w.AddEntry(e); err != nil {
					t.Error(err)
					return
				}
			}
			if err := w.Commit(index.LayerInfo{}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	for i := 0; i < 4; i++ {
		if got := readEntries(t, s, LayerDigest(100+i)); len(got) != 500+i {
			t.Errorf("layer %d: %d entries, want %d", i, len(got), 500+i)
		}
	}
}

// Passes run side by side, and a pass over a layer that an earlier pass
// left behind (or that is indexed again) clears that layer's records
// first. Clearing must not fail or block the passes of other layers.
func testClearingDoesNotDisturbOtherWriters(t *testing.T, s index.Store) {
	ctx := context.Background()
	const layers = 30
	leftover := func(i int) digest.Digest { return LayerDigest(1000 + i) }
	fresh := func(i int) digest.Digest { return LayerDigest(2000 + i) }
	for i := range layers {
		write(t, s, leftover(i), SampleEntries(3000), SampleSpans(40))
	}
	pass := func(d digest.Digest, entries []index.Entry, spans []index.Span) error {
		w, err := s.NewLayerWriter(ctx, d)
		if err != nil {
			return fmt.Errorf("layer %s: starting: %w", d, err)
		}
		for _, e := range entries {
			if err := w.AddEntry(e); err != nil {
				_ = w.Abort()
				return fmt.Errorf("layer %s: %w", d, err)
			}
		}
		for _, sp := range spans {
			if err := w.AddSpan(sp); err != nil {
				_ = w.Abort()
				return fmt.Errorf("layer %s: %w", d, err)
			}
		}
		return w.Commit(index.LayerInfo{Compression: index.Gzip})
	}
	errs := make(chan error, 2*layers)
	var wg sync.WaitGroup
	for i := range layers {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- pass(fresh(i), SampleEntries(2000), SampleSpans(20)) }()
		go func() { defer wg.Done(); errs <- pass(leftover(i), SampleEntries(10), SampleSpans(2)) }()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 3 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent passes failed", failed, 2*layers)
	}
	for i := range layers {
		if got := readEntries(t, s, fresh(i)); len(got) != 2000 {
			t.Errorf("fresh layer %d: %d entries, want 2000", i, len(got))
		}
		if got := readEntries(t, s, leftover(i)); !reflect.DeepEqual(got, SampleEntries(10)) {
			t.Errorf("re-indexed layer %d: %d entries, want the 10 of the new pass", i, len(got))
		}
		if spans, err := s.Spans(ctx, leftover(i)); err != nil || len(spans) != 2 {
			t.Errorf("re-indexed layer %d: %d spans (%v), want 2", i, len(spans), err)
		}
		// Stores may refuse a span beyond the layer's or return no window;
		// the old pass's window is the one wrong answer.
		if w, _ := s.SpanWindow(ctx, leftover(i), 10); len(w) != 0 {
			t.Errorf("re-indexed layer %d: window of span 10 of the old pass survived: %q", i, w)
		}
	}
}

func testManyEntries(t *testing.T, s index.Store) {
	d := LayerDigest(7)
	entries := SampleEntries(60000)
	write(t, s, d, entries, SampleSpans(100))
	got := readEntries(t, s, d)
	if len(got) != len(entries) {
		t.Fatalf("%d entries, want %d", len(got), len(entries))
	}
	for i := range got {
		if got[i].Path != entries[i].Path || got[i].Offset != entries[i].Offset {
			t.Fatalf("entry %d out of order: %q", i, got[i].Path)
		}
	}
}

func testCallbackErrorStops(t *testing.T, s index.Store) {
	d := LayerDigest(8)
	write(t, s, d, SampleEntries(100), nil)
	stop := errors.New("stop")
	calls := 0
	err := s.Entries(context.Background(), d, func(index.Entry) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("Entries: err %v after %d calls, want the callback's error after 3", err, calls)
	}
}

func testCancelledContext(t *testing.T, s index.Store) {
	d := LayerDigest(9)
	write(t, s, d, SampleEntries(5000), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Entries(ctx, d, func(index.Entry) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Entries with cancelled context: %v, want context.Canceled", err)
	}
}

func testUseAfterCommit(t *testing.T, s index.Store) {
	ctx := context.Background()
	w, err := s.NewLayerWriter(ctx, LayerDigest(10))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(index.LayerInfo{}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddEntry(SampleEntries(1)[0]); err == nil {
		t.Error("AddEntry after Commit succeeded")
	}
	if err := w.Commit(index.LayerInfo{}); err == nil {
		t.Error("second Commit succeeded")
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
}
