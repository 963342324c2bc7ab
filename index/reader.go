package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/opencontainers/go-digest"

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
	blobs    BlobOpener
	cacheDir string
	cache    *spanCache
	opts     ReaderOptions
	// prefetching bounds background span inflation.
	prefetching chan struct{}
	foreground  foregroundReads

	mu     sync.Mutex
	layers map[digest.Digest]*layerSlot
}

// ReaderOptions tunes a Reader.
type ReaderOptions struct {
	// CacheDir is where zstd layers' decompressed copies live.
	CacheDir string
	// CacheBytes bounds the span cache; DefaultCacheSize when zero.
	CacheBytes int64
	// OpenTimeout bounds opening one layer's blob; DefaultOpenTimeout
	// when zero. Readers of other layers never wait for it.
	OpenTimeout time.Duration
	// OnCorrupt, when set, hears of a layer whose index or blob turned
	// out damaged while it was read, so that it can be indexed afresh.
	OnCorrupt func(layer digest.Digest, err error)
}

// DefaultOpenTimeout bounds a blob open when ReaderOptions leaves it zero.
const DefaultOpenTimeout = 30 * time.Second

// layerSlot is one layer's open state: being opened (done open), opened
// (l set) or failed (err set; the next read tries again).
type layerSlot struct {
	done chan struct{}
	l    *openLayer
	err  error
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

// NewReader returns a Reader over store that opens blobs through blobs.
func NewReader(store Store, blobs BlobOpener, opts ReaderOptions) *Reader {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheSize
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	return &Reader{
		store:       store,
		blobs:       blobs,
		cacheDir:    opts.CacheDir,
		cache:       newSpanCache(opts.CacheBytes),
		opts:        opts,
		prefetching: make(chan struct{}, runtime.NumCPU()),
		layers:      map[digest.Digest]*layerSlot{},
	}
}

// CacheStats reports the span cache's hits, misses and size, and the
// bytes inflated into it.
func (r *Reader) CacheStats() CacheStats { return r.cache.stats() }

// Close releases open blobs and inflaters.
func (r *Reader) Close() error {
	r.cache.clear()
	r.mu.Lock()
	slots := r.layers
	r.layers = map[digest.Digest]*layerSlot{}
	r.mu.Unlock()
	var errs []error
	for _, slot := range slots {
		errs = append(errs, slot.release())
	}
	return errors.Join(errs...)
}

// Release closes layer's blob and drops its cached spans. A later read
// opens it again; call Release when no shown image uses the layer, so a
// deleted blob does not keep its disk space.
func (r *Reader) Release(layer digest.Digest) error {
	r.mu.Lock()
	slot := r.layers[layer]
	delete(r.layers, layer)
	r.mu.Unlock()
	r.cache.dropLayer(layer)
	if slot == nil {
		return nil
	}
	return slot.release()
}

// OpenLayers lists the layers whose blobs are open now.
func (r *Reader) OpenLayers() []digest.Digest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []digest.Digest
	for d, slot := range r.layers {
		select {
		case <-slot.done:
			if slot.l != nil {
				out = append(out, d)
			}
		default:
		}
	}
	return out
}

// release closes the slot's blob once its open is over, whenever that is.
func (s *layerSlot) release() error {
	select {
	case <-s.done:
		if s.l != nil {
			return s.l.close()
		}
		return nil
	default:
		go func() {
			<-s.done
			if s.l != nil {
				_ = s.l.close()
			}
		}()
		return nil
	}
}

// ReadAt reads len(p) bytes of layer's uncompressed stream at off. It
// returns io.EOF only when off+len(p) passes the end of the stream.
func (r *Reader) ReadAt(ctx context.Context, layer digest.Digest, p []byte, off int64) (int, error) {
	if !isBackground(ctx) {
		r.foreground.begin()
		defer r.foreground.end()
	}
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
			return 0, r.readFailed(ctx, layer, l, err)
		}
		n, err := sd.readAt(p, off)
		if errors.Is(err, errSpanDropped) {
			continue // evicted while we waited; open it again
		}
		if err != nil {
			// A failed span is not kept: the next read starts over.
			r.cache.remove(spanKey{layer, i}, sd)
			return n, r.readFailed(ctx, layer, l, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, l.spans[i].Out, err)})
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

// open returns the open layer, opening it once however many readers ask
// at the same time. Opens of different layers never wait for each other,
// and none waits longer than OpenTimeout for a blob that does not answer.
func (r *Reader) open(ctx context.Context, layer digest.Digest) (*openLayer, error) {
	r.mu.Lock()
	slot, ok := r.layers[layer]
	if ok {
		select {
		case <-slot.done:
			if slot.err != nil {
				ok = false // failed earlier: try again
			}
		default:
		}
	}
	if !ok {
		slot = &layerSlot{done: make(chan struct{})}
		r.layers[layer] = slot
		go r.fill(layer, slot)
	}
	r.mu.Unlock()
	select {
	case <-slot.done:
		return slot.l, slot.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fill opens a layer for slot. It runs on its own goroutine with its own
// deadline, so a reader that gives up does not fail the others waiting.
func (r *Reader) fill(layer digest.Digest, slot *layerSlot) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.OpenTimeout)
	defer cancel()
	type result struct {
		l   *openLayer
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := r.openLayer(ctx, layer)
		res <- result{l, err}
	}()
	select {
	case got := <-res:
		slot.l, slot.err = got.l, got.err
	case <-ctx.Done():
		slot.err = &LayerError{Layer: layer, Err: fmt.Errorf("opening the blob took longer than %s", r.opts.OpenTimeout)}
		go func() {
			// An open that ignores its context answers some time;
			// close what it opened then.
			if got := <-res; got.l != nil {
				_ = got.l.close()
			}
		}()
	}
	if slot.err != nil {
		r.noteCorrupt(layer, slot.err)
	}
	close(slot.done)
}

func (r *Reader) openLayer(ctx context.Context, layer digest.Digest) (*openLayer, error) {
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
		f, _, err := OpenRegular(CachePath(r.cacheDir, layer))
		if err != nil {
			return nil, &LayerError{Layer: layer, Err: fmt.Errorf("opening decompressed cache: %w", err)}
		}
		l.data, l.size, l.close = f, info.UncompressedSize, f.Close
		return l, nil
	}
	if r.blobs == nil {
		return nil, &LayerError{Layer: layer, Err: errors.New("no blob source")}
	}
	b, err := r.blobs.OpenLayer(ctx, layer)
	if err != nil {
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("opening blob: %w", err)}
	}
	if b.Size() != info.CompressedSize {
		b.Close()
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("blob is %d bytes, the index recorded %d", b.Size(), info.CompressedSize)}
	}
	l.data, l.size, l.close = b, b.Size(), b.Close
	return l, nil
}

// dropOpen forgets l as layer's open blob after a read from it failed, so
// the next read opens the layer again, maybe from another source.
func (r *Reader) dropOpen(layer digest.Digest, l *openLayer) {
	r.mu.Lock()
	slot, ok := r.layers[layer]
	if ok && slot.l == l {
		delete(r.layers, layer)
	} else {
		ok = false
	}
	r.mu.Unlock()
	if ok {
		_ = slot.release()
	}
}

// readFailed handles a read of l that failed for another reason than its
// caller giving up: the open blob is dropped, so the next read opens the
// layer afresh (maybe from another source), and damage is reported.
func (r *Reader) readFailed(ctx context.Context, layer digest.Digest, l *openLayer, err error) error {
	if ctx.Err() != nil {
		return err
	}
	r.dropOpen(layer, l)
	r.noteCorrupt(layer, err)
	return err
}

// noteCorrupt passes damage of the index or of the blob to OnCorrupt.
func (r *Reader) noteCorrupt(layer digest.Digest, err error) {
	if r.opts.OnCorrupt != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrSpanCorrupt)) {
		r.opts.OnCorrupt(layer, err)
	}
}

// openSpan starts inflating span i: at its checkpoint for gzip, at its
// offset for uncompressed and cached layers.
func (r *Reader) openSpan(ctx context.Context, layer digest.Digest, l *openLayer, i int) (*spanData, error) {
	sp := l.spans[i]
	start, end := l.spanRange(i)
	length := int(end - start)
	if chunks := (length + VerifyChunkSize - 1) / VerifyChunkSize; len(sp.Digests) != chunks*sha256.Size {
		return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d: %d digest bytes for %d bytes of data: %w", i, len(sp.Digests), length, ErrCorrupt)}
	}
	var next io.ReadCloser
	var inflated *atomic.Int64
	if l.info.Compression == Gzip {
		var err error
		if next, err = r.gzipStream(ctx, layer, l, i); err != nil {
			return nil, &LayerError{Layer: layer, Err: fmt.Errorf("span %d at offset %d: %w", i, sp.Out, err)}
		}
		inflated = &r.cache.inflated
	} else {
		next = io.NopCloser(io.NewSectionReader(l.data, start, end-start))
	}
	buf, backing := r.cache.buffers.get(length)
	return &spanData{size: int64(length), buf: buf, backing: backing, next: next, digests: sp.Digests, inflated: inflated}, nil
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
	return zran.NewReaderSize(l.data, l.size, zran.Checkpoint{Out: sp.Out, In: sp.In, Bits: sp.Bits, MemberStart: sp.MemberStart, Window: window}, readSizeOf(l.data))
}
