package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/index/zran"
)

// DefaultCacheSize is the default bound of the inflated-span cache.
const DefaultCacheSize = 256 << 20

// ErrSpanCorrupt reports inflated bytes that do not match the digest the
// layer pass recorded: the blob changed under us, or the index is damaged.
var ErrSpanCorrupt = errors.New("inflated span does not match its recorded sha256")

// Reader serves the uncompressed bytes of indexed layers lazily: a read
// inflates only the span that holds it, checks the span's sha256, and keeps
// the span in a bounded LRU so that sequential reads inflate it once.
type Reader struct {
	store    Store
	cacheDir string
	cache    *spanCache
	// prefetching bounds background span inflation.
	prefetching chan struct{}

	mu      sync.Mutex
	sources map[digest.Digest]blob.Source
	layers  map[digest.Digest]*openLayer
}

// openLayer is what the reader keeps per layer after its first read.
type openLayer struct {
	info  LayerInfo
	spans []Span
	data  io.ReaderAt // the blob, or the decompressed cache of a zstd layer
	size  int64
	close func() error
	// lastEnd is where the previous read ended, to spot sequential readers.
	lastEnd atomic.Int64
}

// NewReader returns a Reader over store. cacheBytes bounds the span cache;
// cacheDir is where zstd layers' decompressed copies live.
func NewReader(store Store, cacheDir string, cacheBytes int64) *Reader {
	if cacheBytes <= 0 {
		cacheBytes = DefaultCacheSize
	}
	return &Reader{
		store:       store,
		cacheDir:    cacheDir,
		cache:       newSpanCache(cacheBytes),
		prefetching: make(chan struct{}, runtime.NumCPU()),
		sources:     map[digest.Digest]blob.Source{},
		layers:      map[digest.Digest]*openLayer{},
	}
}

// SetSource says where layer's blob can be opened. The latest call wins.
func (r *Reader) SetSource(layer digest.Digest, src blob.Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sources[layer] = src
}

// CacheStats reports the span cache's hits, misses and size.
func (r *Reader) CacheStats() CacheStats { return r.cache.stats() }

// Close releases open blobs and inflaters.
func (r *Reader) Close() error {
	r.cache.clear()
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for d, l := range r.layers {
		errs = append(errs, l.close())
		delete(r.layers, d)
	}
	return errors.Join(errs...)
}

// ReadAt reads len(p) bytes of layer's uncompressed stream at off. It
// returns io.EOF only when off+len(p) passes the end of the stream.
func (r *Reader) ReadAt(ctx context.Context, layer digest.Digest, p []byte, off int64) (int, error) {
	l, err := r.open(ctx, layer)
	if err != nil {
		return 0, err
	}
	sequential := l.noteRead(off, int64(len(p)))
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= l.info.UncompressedSize {
			return n, io.EOF
		}
		i := sort.Search(len(l.spans), func(i int) bool { return l.spans[i].Out > pos }) - 1
		if i < 0 {
			return n, &LayerError{Layer: layer, Err: fmt.Errorf("no span covers offset %d", pos)}
		}
		start, end := l.spanRange(i)
		k, err := r.readSpan(ctx, layer, l, i, p[n:min(len(p), n+int(end-pos))], int(pos-start))
		n += k
		if err != nil {
			return n, err
		}
		if sequential {
			for ahead := i + 1; ahead < min(len(l.spans), i+1+prefetchSpans); ahead++ {
				r.prefetch(layer, l, ahead)
			}
		}
	}
	return n, nil
}

// prefetchSpans is how many spans ahead of a sequential reader are
// inflated in the background, so that inflation on another core keeps
// ahead of a reader that is mostly waiting on FUSE round trips.
const prefetchSpans = 8

// sequentialSlack is how far apart two reads may be and still count as
// one sequential stream: consecutive files of a layer are separated by
// their tar headers, and the kernel's readahead reorders a little.
const sequentialSlack = 256 << 10

// noteRead records a read and reports whether it continues the previous one.
func (l *openLayer) noteRead(off, n int64) bool {
	last := l.lastEnd.Swap(off + n)
	return off >= last-sequentialSlack && off <= last+sequentialSlack
}

func (l *openLayer) spanRange(i int) (start, end int64) {
	start, end = l.spans[i].Out, l.info.UncompressedSize
	if i+1 < len(l.spans) {
		end = l.spans[i+1].Out
	}
	return start, end
}

// readSpan copies bytes of span i at off (relative to the span) into p.
func (r *Reader) readSpan(ctx context.Context, layer digest.Digest, l *openLayer, i int, p []byte, off int) (int, error) {
	for {
		sd, err := r.cache.get(spanKey{layer, i}, func() (*spanData, error) { return r.openSpan(ctx, layer, l, i) })
		if err != nil {
			return 0, err
		}
		n, err := sd.readAt(p, off)
		if errors.Is(err, errSpanDropped) {
			continue // evicted while we waited; open it again
		}
		if err != nil {
			return n, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, l.spans[i].Out, err)}
		}
		return n, nil
	}
}

// prefetch inflates span i in the background, so that a sequential reader
// finds it ready; at most one prefetch per CPU runs at a time.
func (r *Reader) prefetch(layer digest.Digest, l *openLayer, i int) {
	if start, end := l.spanRange(i); end <= start || r.cache.contains(spanKey{layer, i}) {
		return
	}
	select {
	case r.prefetching <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.prefetching }()
		start, end := l.spanRange(i)
		// Inflate the whole span by asking for its last byte. Errors
		// surface again when a reader asks for the span.
		var last [1]byte
		_, _ = r.readSpan(context.Background(), layer, l, i, last[:], int(end-start)-1)
	}()
}

func (r *Reader) open(ctx context.Context, layer digest.Digest) (*openLayer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.layers[layer]; ok {
		return l, nil
	}
	info, err := r.store.Layer(ctx, layer)
	if err != nil {
		return nil, err
	}
	spans, err := r.store.Spans(ctx, layer)
	if err != nil {
		return nil, err
	}
	l := &openLayer{info: info, spans: spans}
	if info.Compression == ZstdCache {
		f, err := os.Open(CachePath(r.cacheDir, layer))
		if err != nil {
			return nil, &LayerError{Layer: layer, Err: fmt.Errorf("opening decompressed cache: %w", err)}
		}
		l.data, l.size, l.close = f, info.UncompressedSize, f.Close
	} else {
		src, ok := r.sources[layer]
		if !ok {
			return nil, &LayerError{Layer: layer, Err: errors.New("no blob source known for this layer")}
		}
		b, err := src.Open(ctx, layer)
		if err != nil {
			return nil, &LayerError{Layer: layer, Err: fmt.Errorf("opening blob: %w", err)}
		}
		l.data, l.size, l.close = b, b.Size(), b.Close
	}
	r.layers[layer] = l
	return l, nil
}

// openSpan starts inflating span i: at its checkpoint for gzip, at its
// offset for uncompressed and cached layers.
func (r *Reader) openSpan(ctx context.Context, layer digest.Digest, l *openLayer, i int) (*spanData, error) {
	sp := l.spans[i]
	start, end := l.spanRange(i)
	length := int(end - start)
	if chunks := (length + VerifyChunkSize - 1) / VerifyChunkSize; len(sp.Digests) != chunks*sha256.Size {
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d: %d digest bytes for %d bytes of data: index damaged", i, len(sp.Digests), length)}
	}
	var next io.ReadCloser
	if l.info.Compression == Gzip {
		var err error
		if next, err = r.gzipStream(ctx, layer, l, i); err != nil {
			return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, sp.Out, err)}
		}
	} else {
		next = io.NopCloser(io.NewSectionReader(l.data, start, end-start))
	}
	buf, backing := r.cache.buffers.get(length)
	return &spanData{size: int64(length), buf: buf, backing: backing, next: next, digests: sp.Digests}, nil
}

func (r *Reader) gzipStream(ctx context.Context, layer digest.Digest, l *openLayer, i int) (io.ReadCloser, error) {
	sp := l.spans[i]
	var window []byte
	if !sp.MemberStart {
		packed, err := r.store.SpanWindow(ctx, layer, i)
		if err != nil {
			return nil, err
		}
		if window, err = io.ReadAll(flate.NewReader(bytes.NewReader(packed))); err != nil {
			return nil, fmt.Errorf("unpacking window: %w", err)
		}
	}
	return zran.NewReader(l.data, l.size, zran.Checkpoint{Out: sp.Out, In: sp.In, Bits: sp.Bits, MemberStart: sp.MemberStart, Window: window})
}
