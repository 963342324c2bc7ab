package index

import (
	"context"
	"errors"
	"time"

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
	// DeleteLayer removes a layer and everything recorded for it,
	// including its content objects.
	DeleteLayer(ctx context.Context, layer digest.Digest) error
	// Layers calls fn with the info of every completed layer, in digest
	// order; garbage collection finds what no image holds with it.
	Layers(ctx context.Context, fn func(LayerInfo) error) error

	// ContentObjects calls fn for every content object recorded for a
	// layer's entries, in (Offset, Meta) order. A layer with none
	// recorded yields nothing and no error.
	ContentObjects(ctx context.Context, layer digest.Digest, fn func(ContentObject) error) error
	// ContentObject returns the object recorded for one entry of a
	// layer, or ErrNotFound.
	ContentObject(ctx context.Context, layer digest.Digest, offset int64, meta uint64) (ObjectID, error)
	// PutContentObjects records objects for a layer's entries, replacing
	// those with the same (Offset, Meta).
	PutContentObjects(ctx context.Context, layer digest.Digest, objs []ContentObject) error

	// Materialization returns the recorded materialization of an image,
	// or ErrNotFound.
	Materialization(ctx context.Context, image digest.Digest) (Materialization, error)
	// PutMaterialization records an image's materialization, durably
	// before it returns.
	PutMaterialization(ctx context.Context, image digest.Digest, m Materialization) error
	// DeleteMaterialization forgets an image's materialization; it is
	// not an error if there is none.
	DeleteMaterialization(ctx context.Context, image digest.Digest) error
	// Materializations calls fn for every recorded image, in digest order.
	Materializations(ctx context.Context, fn func(image digest.Digest, m Materialization) error) error

	Close() error
}

// ObjectID is the checksum of a content-addressed object (an OSTree file
// object's sha256).
type ObjectID [32]byte

// ContentObject records that the regular file whose data starts at Offset
// in a layer's uncompressed stream is held by object ID, written with the
// metadata that Meta fingerprints. An OSTree file object's identity covers
// owner, mode and xattrs as well as the bytes, so the same entry shown
// with other metadata (which a merged view does not do today, but a
// materializer must not assume) is a different object.
type ContentObject struct {
	Offset int64
	Meta   uint64
	ID     ObjectID
}

// MaterialState is where an image's materialization stands.
type MaterialState string

// The states of a materialization. Running is recorded before any object
// is written, so a crash leaves it behind and a restart knows to redo it.
const (
	MaterialPending MaterialState = "pending"
	MaterialRunning MaterialState = "running"
	MaterialDone    MaterialState = "done"
	MaterialFailed  MaterialState = "failed"
)

// Materialization is what the daemon records about writing an image out
// in full (an OSTree commit).
type Materialization struct {
	State MaterialState `json:"state"`
	// Commit is the commit checksum once State is MaterialDone.
	Commit string `json:"commit,omitempty"`
	// Reason says why State is MaterialFailed.
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
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
