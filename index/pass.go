package index

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index/zran"
)

// DefaultSpanSize is the most uncompressed bytes between checkpoints. A
// cold random read inflates at most one span, so this bounds its latency.
const DefaultSpanSize = 1 << 20

// PassOptions tunes IndexLayer.
type PassOptions struct {
	// SpanSize is the checkpoint spacing; DefaultSpanSize when zero.
	SpanSize int64
	// CacheDir receives decompressed copies of zstd layers.
	CacheDir string
	// MaxLayerSize bounds a layer's uncompressed size, whatever its
	// compression, and so the size of a zstd layer's decompressed copy;
	// a pass whose output grows beyond it fails with ErrLayerTooLarge.
	// DefaultMaxLayerSize when zero.
	MaxLayerSize int64
	// MaxZstdWindow bounds the window a zstd frame may ask for, which the
	// decoder holds in memory; a larger one fails the layer with
	// ErrZstdWindowTooLarge. DefaultMaxZstdWindow when zero.
	MaxZstdWindow int64
	// MinFreeSpace is the free space, in bytes, that writing a zstd copy
	// leaves on CacheDir's filesystem; below it the pass fails as if the
	// disk were full. It keeps room for the index, whose database cannot
	// fail gracefully on a full disk. DefaultMinFreeSpace when zero.
	MinFreeSpace int64
	// observeSync, set by tests, sees each step that makes a zstd copy
	// durable before it happens, and can fail it.
	observeSync func(step, path string) error
	// Progress, when set, counts compressed bytes read so far.
	Progress *atomic.Int64
	// MaxLayerXattrBytes bounds the names and values of all extended
	// attributes of one layer, which every view showing the layer holds
	// in memory; a layer beyond it fails. DefaultMaxLayerXattrBytes when
	// zero.
	MaxLayerXattrBytes int64
	// Ignored, when set, counts entries the pass left out because a
	// directory in their path starts with ".wh.", a name no filesystem of
	// an image can hold.
	Ignored *atomic.Int64
}

// DefaultMaxLayerXattrBytes is far above real layers (a capability or an
// SELinux label per file) and keeps a small crafted blob from costing
// hundreds of MiB in every view that shows it.
const DefaultMaxLayerXattrBytes = 16 << 20

// ErrDigestMismatch reports a blob whose bytes do not hash to its digest.
var ErrDigestMismatch = errors.New("blob content does not match its digest")

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// IndexLayer makes the one sequential pass over a layer blob: it verifies
// the blob's digest, records every tar entry, and records the spans that
// the lazy reader restarts from. The layer is committed to store only when
// all of that succeeded; on error nothing of it is visible.
func IndexLayer(ctx context.Context, store Store, b Blob, layer digest.Digest, opts PassOptions) (LayerInfo, error) {
	if err := layer.Validate(); err != nil {
		return LayerInfo{}, &LayerError{Layer: layer, Err: err}
	}
	if layer.Algorithm() != digest.SHA256 {
		return LayerInfo{}, &LayerError{Layer: layer, Err: fmt.Errorf("digest algorithm %s not supported", layer.Algorithm())}
	}
	if opts.SpanSize <= 0 {
		opts.SpanSize = DefaultSpanSize
	}
	w, err := store.NewLayerWriter(ctx, layer)
	if err != nil {
		return LayerInfo{}, &StoreError{Layer: layer, Err: err}
	}
	p := &pass{ctx: ctx, layer: layer, blob: b, opts: opts, writer: w}
	info, err := p.run()
	if err != nil {
		_ = w.Abort()
		p.removeCache()
		return LayerInfo{}, err
	}
	return info, nil
}

type pass struct {
	ctx       context.Context
	layer     digest.Digest
	blob      Blob
	opts      PassOptions
	writer    LayerWriter
	cachePath string
	// cacheFinal says the zstd copy was renamed into place, so a failure
	// after that must remove it there.
	cacheFinal bool
	// fault is the first failure recorded below the tar reader; see
	// recordFault.
	fault error
}

func (p *pass) fail(err error) error { return &LayerError{Layer: p.layer, Err: err} }

// storeFail wraps a failure to write the index or the cache: the state
// directory's fault, not the layer's.
func (p *pass) storeFail(err error) error { return &StoreError{Layer: p.layer, Err: err} }

func (p *pass) run() (LayerInfo, error) {
	size := p.blob.Size()
	head := make([]byte, 4)
	n, err := p.blob.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return LayerInfo{}, p.fail(fmt.Errorf("reading blob: %w", err))
	}
	head = head[:n]

	blobHash := sha256.New()
	compressed := &countingReader{r: io.TeeReader(&contextReader{ctx: p.ctx, r: io.NewSectionReader(p.blob, 0, size)}, blobHash), progress: p.opts.Progress}
	info := LayerInfo{Digest: p.layer, CompressedSize: size}

	var stream io.Reader
	var spans *spanRecorder
	// Spans are recorded from inside the readers below the tar reader, so
	// a failure to store one is recorded as a fault of the state directory.
	emit := func(s Span) error {
		if err := p.writer.AddSpan(s); err != nil {
			return p.recordFault(p.storeFail(fmt.Errorf("recording span at offset %d: %w", s.Out, err)))
		}
		return nil
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		info.Compression = Gzip
		spans = newSpanRecorder(0, emit)
		ix, err := zran.NewIndexer(compressed, p.opts.SpanSize, func(c zran.Checkpoint) error {
			return spans.Checkpoint(c.Out, c.In, c.Bits, c.MemberStart, c.Window)
		})
		if err != nil {
			return LayerInfo{}, p.fail(err)
		}
		defer ix.Close()
		stream = &sizeLimiter{p: p, r: ix, max: p.opts.maxLayerSize()}
	case bytes.HasPrefix(head, zstdMagic):
		info.Compression = ZstdCache
		spans = newSpanRecorder(p.opts.SpanSize, emit)
		window := p.opts.maxZstdWindow()
		dec, err := zstd.NewReader(compressed, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(uint64(window)))
		if err != nil {
			return LayerInfo{}, p.fail(err)
		}
		defer dec.Close()
		cache, err := p.createCache()
		if err != nil {
			return LayerInfo{}, p.storeFail(fmt.Errorf("creating the decompressed copy: %w", err))
		}
		defer cache.Close()
		// The limit comes before the copy, so that the copy never grows
		// beyond it.
		limited := &sizeLimiter{p: p, r: &zstdLimits{p: p, dec: dec, window: window}, max: p.opts.maxLayerSize()}
		stream = io.TeeReader(limited, &faultWriter{p: p, w: cache, what: "the decompressed copy " + cache.Name(), check: p.checkCacheSpace})
	default:
		info.Compression = Uncompressed
		spans = newSpanRecorder(p.opts.SpanSize, emit)
		stream = &sizeLimiter{p: p, r: compressed, max: p.opts.maxLayerSize()}
	}

	uncompressed := &countingReader{r: io.TeeReader(stream, spans)}
	entries, whiteouts, err := p.readTar(uncompressed)
	if err != nil {
		return LayerInfo{}, p.explain(err)
	}
	// Whatever follows the end-of-archive marker still belongs to the
	// stream and must be hashed, decompressed and verified.
	if _, err := io.Copy(io.Discard, uncompressed); err != nil {
		return LayerInfo{}, p.explain(p.fail(fmt.Errorf("reading past the end of the tar archive: %w", err)))
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return LayerInfo{}, p.explain(p.fail(fmt.Errorf("reading blob: %w", err)))
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, blobHash.Sum(nil)); got != p.layer {
		return LayerInfo{}, p.fail(fmt.Errorf("%w: %d bytes hash to %s", ErrDigestMismatch, compressed.n, got))
	}
	if err := spans.Close(); err != nil {
		return LayerInfo{}, p.explain(p.fail(err))
	}
	if err := p.finishCache(); err != nil {
		return LayerInfo{}, p.storeFail(err)
	}
	info.UncompressedSize = uncompressed.n
	info.Entries, info.Spans, info.WhiteoutFree = entries, spans.count, whiteouts == 0
	if err := p.writer.Commit(info); err != nil {
		return LayerInfo{}, p.storeFail(err)
	}
	return info, nil
}

// readTar records every entry; errors name the entry they are about. The
// digest is checked after the tar, so a corrupt blob may first show up as
// a tar error; both fail the layer.
func (p *pass) readTar(r *countingReader) (count, whiteouts int64, err error) {
	// The capture keeps the raw headers of each entry, from which sparse
	// maps are read; archive/tar does not expose them.
	hc := &headerCapture{r: r, off: r.n, from: r.n}
	tr := tar.NewReader(hc)
	maxXattrs := p.opts.MaxLayerXattrBytes
	if maxXattrs <= 0 {
		maxXattrs = DefaultMaxLayerXattrBytes
	}
	var layerXattrs, fragments int64
	last := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return count, whiteouts, nil
		}
		if err != nil {
			if last != "" {
				return 0, 0, &EntryError{Layer: p.layer, Path: last, Err: fmt.Errorf("reading the entry's data or the next header at offset %d: %w", r.n, err)}
			}
			return 0, 0, p.fail(fmt.Errorf("reading tar header at offset %d: %w", r.n, err))
		}
		last = h.Name
		e, ok, err := entryFromHeader(h, r.n)
		if err != nil {
			return 0, 0, &EntryError{Layer: p.layer, Path: h.Name, Err: err}
		}
		dataEnd := r.n
		if ok && e.Type == TypeRegular {
			dataEnd += e.Size
			if kind := sparseKindOf(h); kind != notSparse {
				var stored int64
				if e.Sparse, stored, err = sparseFile(h, kind, hc, r.n); err != nil {
					return 0, 0, &EntryError{Layer: p.layer, Path: h.Name, Err: err}
				}
				dataEnd = r.n + stored
				if fragments += int64(len(e.Sparse)); fragments > maxLayerSparseFragments {
					return 0, 0, &EntryError{Layer: p.layer, Path: h.Name, Err: fmt.Errorf("%w: the layer's sparse files have more than %d fragments", errBadSparseMap, maxLayerSparseFragments)}
				}
			}
		}
		hc.nextEntry(dataEnd)
		if !ok {
			continue
		}
		if hasWhiteoutDir(e.Path) {
			if p.opts.Ignored != nil {
				p.opts.Ignored.Add(1)
			}
			continue
		}
		if layerXattrs += xattrBytes(e.Xattrs); layerXattrs > maxXattrs {
			return 0, 0, &EntryError{Layer: p.layer, Path: h.Name, Err: fmt.Errorf("%w: the layer's extended attributes exceed %d bytes", errBadXattr, maxXattrs)}
		}
		if err := p.writer.AddEntry(e); err != nil {
			return 0, 0, p.storeFail(fmt.Errorf("recording entry %q: %w", h.Name, err))
		}
		count++
		if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
			whiteouts++
		}
	}
}

func (p *pass) createCache() (*os.File, error) {
	if p.opts.CacheDir == "" {
		return nil, errors.New("zstd layers need a cache directory")
	}
	if err := os.MkdirAll(p.opts.CacheDir, 0o700); err != nil {
		return nil, err
	}
	if err := p.checkCacheSpace(); err != nil {
		return nil, err
	}
	p.cachePath = CachePath(p.opts.CacheDir, p.layer)
	return os.Create(p.cachePath + ".partial")
}

// finishCache makes the zstd copy durable under its final name before the
// layer is committed: the copy's bytes, then the rename, then the
// directory that records the rename. Otherwise a power loss could leave a
// committed layer whose copy is missing or short.
func (p *pass) finishCache() error {
	if p.cachePath == "" {
		return nil
	}
	partial := p.cachePath + ".partial"
	if err := p.syncPath("sync", partial, os.O_RDWR); err != nil {
		return fmt.Errorf("syncing the decompressed copy: %w", err)
	}
	if err := p.step("rename", p.cachePath); err != nil {
		return err
	}
	if err := os.Rename(partial, p.cachePath); err != nil {
		return fmt.Errorf("moving the decompressed copy into place: %w", err)
	}
	p.cacheFinal = true
	if err := p.syncPath("syncdir", p.opts.CacheDir, os.O_RDONLY); err != nil {
		return fmt.Errorf("syncing the directory of the decompressed copy: %w", err)
	}
	return nil
}

// syncPath fsyncs a file or directory by name.
func (p *pass) syncPath(step, name string, flag int) error {
	if err := p.step(step, name); err != nil {
		return err
	}
	f, err := os.OpenFile(name, flag, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// step tells a test's observer what is about to happen.
func (p *pass) step(step, path string) error {
	if p.opts.observeSync == nil {
		return nil
	}
	return p.opts.observeSync(step, path)
}

func (p *pass) removeCache() {
	if p.cachePath == "" {
		return
	}
	_ = os.Remove(p.cachePath + ".partial")
	if p.cacheFinal {
		// The layer was not committed, so nothing reads this copy.
		_ = os.Remove(p.cachePath)
	}
}

// CachePath is where the decompressed copy of a zstd layer lives.
func CachePath(dir string, layer digest.Digest) string {
	return filepath.Join(dir, layer.Encoded()+".tar")
}

type countingReader struct {
	r        io.Reader
	n        int64
	progress *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil {
		c.progress.Add(int64(n))
	}
	return n, err
}

// contextReader stops a long pass when its context is cancelled.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
