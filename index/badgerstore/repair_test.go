package badgerstore_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

// gzipLayer is a small real layer: a few files, and enough incompressible
// bytes for several spans at a 64 KiB span size.
func gzipLayer(t *testing.T, files int) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range files {
		data := make([]byte, 50_000)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%03d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return blob.Bytes()
}

type layerRecords struct {
	info    index.LayerInfo
	entries []index.Entry
	spans   []index.Span
}

func readLayer(ctx context.Context, s index.Store, d digest.Digest) (layerRecords, error) {
	var l layerRecords
	var err error
	if l.info, err = s.Layer(ctx, d); err != nil {
		return l, err
	}
	if err := s.Entries(ctx, d, func(e index.Entry) error { l.entries = append(l.entries, e); return nil }); err != nil {
		return l, err
	}
	l.spans, err = s.Spans(ctx, d)
	return l, err
}

// A damaged layer is reported as ErrCorrupt, naming the layer, so that the
// caller knows to delete it and pass over it again; and that repairs it.
func TestDamagedLayerIsReportedAndRepaired(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	blob := gzipLayer(t, 8)
	d := digest.FromBytes(blob)
	opts := index.PassOptions{SpanSize: 64 << 10}
	if _, err := index.IndexLayer(ctx, s, indextest.MemBlob(blob), d, opts); err != nil {
		t.Fatal(err)
	}
	good, err := readLayer(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(good.entries) != 8 || len(good.spans) < 3 {
		t.Fatalf("test layer has %d entries and %d spans; want 8 and several", len(good.entries), len(good.spans))
	}

	damages := []struct {
		name   string
		damage func() error
		read   func() error
	}{
		{"entry record lost", func() error { return s.DeleteRecordForTest(d, 'e', 3) },
			func() error { return s.Entries(ctx, d, func(index.Entry) error { return nil }) }},
		{"entry record garbled", func() error { return s.OverwriteRecordForTest(d, 'e', 2, []byte{0xff, 0xff}) },
			func() error { return s.Entries(ctx, d, func(index.Entry) error { return nil }) }},
		{"span record lost", func() error { return s.DeleteRecordForTest(d, 's', 1) },
			func() error { _, err := s.Spans(ctx, d); return err }},
		{"span record garbled", func() error { return s.OverwriteRecordForTest(d, 's', 0, []byte{0x80}) },
			func() error { _, err := s.Spans(ctx, d); return err }},
		{"completion marker garbled", func() error { return s.OverwriteRecordForTest(d, 'l', 0, []byte("{not json")) },
			func() error { _, err := s.Layer(ctx, d); return err }},
	}
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.damage(); err != nil {
				t.Fatal(err)
			}
			err := tc.read()
			if !errors.Is(err, index.ErrCorrupt) {
				t.Fatalf("reading the damaged layer: %v, want an error wrapping index.ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), d.String()) {
				t.Errorf("error %q does not name the layer", err)
			}
			if err := s.DeleteLayer(ctx, d); err != nil {
				t.Fatal(err)
			}
			if _, err := index.IndexLayer(ctx, s, indextest.MemBlob(blob), d, opts); err != nil {
				t.Fatalf("fresh pass after the damage: %v", err)
			}
			again, err := readLayer(ctx, s, d)
			if err != nil {
				t.Fatalf("after the fresh pass: %v", err)
			}
			if !reflect.DeepEqual(again, good) {
				t.Errorf("after the fresh pass the layer differs from the first pass")
			}
		})
	}
}

// The old name still finds the error.
func TestErrCorruptIsTheIndexOne(t *testing.T) {
	if !errors.Is(badgerstore.ErrCorrupt, index.ErrCorrupt) {
		t.Error("badgerstore.ErrCorrupt is not index.ErrCorrupt")
	}
}
