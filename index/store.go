package index

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
)

// Compression says how a layer's blob encodes its tar stream, and so how
// the lazy reader reaches an uncompressed offset.
type Compression uint8

// Compressions the layer pass understands.
const (
	// Uncompressed spans are read straight from the blob.
	Uncompressed Compression = iota + 1
	// Gzip spans restart inflation from a recorded checkpoint.
	Gzip
	// ZstdCache spans are read from a verified decompressed copy of the
	// layer in the state directory, because zstd frames written by common
	// tools are not seekable.
	ZstdCache
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "tar"
	case Gzip:
		return "gzip"
	case ZstdCache:
		return "zstd"
	}
	return "unknown"
}

// LayerInfo describes a layer whose pass completed.
type LayerInfo struct {
	Digest           digest.Digest
	Compression      Compression
	CompressedSize   int64
	UncompressedSize int64
	Entries          int64
	Spans            int64
	// WhiteoutFree says the pass saw no .wh. entries, so merging can skip
	// looking for them. The zero value is the safe one: look.
	WhiteoutFree bool
}

// Span is a stretch of a layer's uncompressed stream that the lazy reader
// inflates and verifies as one unit.
type Span struct {
	// Out is the uncompressed offset where the span starts; the span ends
	// where the next one starts, or at the end of the stream.
	Out int64
	// In and Bits locate the restart point in the compressed blob; see
	// zran.Checkpoint. Unused for uncompressed and cached layers.
	In          int64
	Bits        uint8
	MemberStart bool
	// Digests holds the sha256 of each VerifyChunkSize piece of the span's
	// uncompressed bytes, counted from Out, back to back. A read verifies
	// what it inflated chunk by chunk, so it stops once it has the bytes
	// it needs instead of inflating and hashing the whole span.
	Digests []byte
	// Window is the deflate dictionary (the 32 KiB before Out), stored
	// flate-compressed. Spans returns it empty; SpanWindow loads it.
	Window []byte
}

// VerifyChunkSize is the unit in which inflated bytes are verified.
const VerifyChunkSize = 64 << 10

// ErrNotFound is returned for layers that have no completed pass.
var ErrNotFound = errors.New("not found in index")

// ErrCorrupt reports index records that contradict each other or cannot
// be decoded. The layer must be indexed again; stores wrap it.
var ErrCorrupt = errors.New("index records are damaged")

// Store holds the results of layer passes. A layer becomes visible to the
// read methods only when its LayerWriter commits, so a crash in the middle
// of a pass never leaves a layer that looks complete.
type Store interface {
	// Layer returns the info of a completed layer, or ErrNotFound.
	Layer(ctx context.Context, layer digest.Digest) (LayerInfo, error)
	// Entries calls fn for every entry of a completed layer in tar order.
	Entries(ctx context.Context, layer digest.Digest, fn func(Entry) error) error
	// Spans returns a completed layer's spans ordered by Out, without windows.
	Spans(ctx context.Context, layer digest.Digest) ([]Span, error)
	// SpanWindow returns the compressed window of span i.
	SpanWindow(ctx context.Context, layer digest.Digest, i int) ([]byte, error)
	// NewLayerWriter starts recording a layer, discarding whatever an
	// earlier, unfinished pass left for it.
	NewLayerWriter(ctx context.Context, layer digest.Digest) (LayerWriter, error)
	// DeleteLayer removes a layer and everything recorded for it.
	DeleteLayer(ctx context.Context, layer digest.Digest) error
	Close() error
}

// LayerWriter records one layer pass. Entries and spans must be added in
// stream order.
type LayerWriter interface {
	AddEntry(e Entry) error
	AddSpan(s Span) error
	// Commit makes everything durable and then marks the layer complete.
	Commit(info LayerInfo) error
	// Abort discards what was written. It is safe after Commit.
	Abort() error
}
