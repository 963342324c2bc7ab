package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

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
}

// NewReader returns a Reader over store. cacheBytes bounds the span cache;
// cacheDir is where zstd layers' decompressed copies live.
func NewReader(store Store, cacheDir string, cacheBytes int64) *Reader {
	if cacheBytes <= 0 {
		cacheBytes = DefaultCacheSize
	}
	return &Reader{
		store:    store,
		cacheDir: cacheDir,
		cache:    newSpanCache(cacheBytes),
		sources:  map[digest.Digest]blob.Source{},
		layers:   map[digest.Digest]*openLayer{},
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

// Close releases open blobs.
func (r *Reader) Close() error {
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
		data, err := r.cache.get(spanKey{layer, i}, func() ([]byte, error) { return r.inflate(ctx, layer, l, i) })
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[pos-l.spans[i].Out:])
	}
	return n, nil
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

func (r *Reader) inflate(ctx context.Context, layer digest.Digest, l *openLayer, i int) ([]byte, error) {
	sp := l.spans[i]
	end := l.info.UncompressedSize
	if i+1 < len(l.spans) {
		end = l.spans[i+1].Out
	}
	buf := make([]byte, end-sp.Out)
	var err error
	switch l.info.Compression {
	case Gzip:
		err = r.inflateGzip(ctx, layer, l, i, buf)
	default:
		_, err = l.data.ReadAt(buf, sp.Out)
		if errors.Is(err, io.EOF) && int64(len(buf)) == end-sp.Out {
			err = nil
		}
	}
	if err != nil {
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, sp.Out, err)}
	}
	if sha256.Sum256(buf) != sp.Digest {
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, sp.Out, ErrSpanCorrupt)}
	}
	return buf, nil
}

func (r *Reader) inflateGzip(ctx context.Context, layer digest.Digest, l *openLayer, i int, buf []byte) error {
	sp := l.spans[i]
	var window []byte
	if !sp.MemberStart {
		packed, err := r.store.SpanWindow(ctx, layer, i)
		if err != nil {
			return err
		}
		if window, err = io.ReadAll(flate.NewReader(bytes.NewReader(packed))); err != nil {
			return fmt.Errorf("unpacking window: %w", err)
		}
	}
	zr, err := zran.NewReader(l.data, l.size, zran.Checkpoint{Out: sp.Out, In: sp.In, Bits: sp.Bits, MemberStart: sp.MemberStart, Window: window})
	if err != nil {
		return err
	}
	defer zr.Close()
	_, err = io.ReadFull(zr, buf)
	return err
}
