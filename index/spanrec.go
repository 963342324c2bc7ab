package index

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"

	"github.com/klauspost/compress/flate"
)

// maxPendingSpanBytes bounds the bytes held while waiting for the next
// checkpoint. zlib's deflate blocks never exceed a few MiB of output, so
// only a hostile stream gets near it.
const maxPendingSpanBytes = 64 << 20

// spanRecorder cuts the uncompressed stream into spans and hashes each.
// Checkpoints and bytes arrive in either order: the indexer picks a block
// boundary only once it has passed it, so bytes beyond a checkpoint may be
// written first; and it reports a gzip member start while the bytes before
// it are still on their way. So bytes are held until the span they belong
// to is known, and checkpoints wait until the bytes before them arrived.
type spanRecorder struct {
	// fixed > 0 cuts spans every fixed bytes; used when the stream has no
	// checkpoints of its own (uncompressed and cached layers).
	fixed    int64
	emit     func(Span) error
	current  Span
	started  bool
	queued   []Span // checkpoints the written bytes have not reached yet
	count    int64  // spans emitted
	pending  []byte // bytes from pending0 on, not yet hashed
	pending0 int64
	hasher   chunkHasher
	written  int64
	window   bytes.Buffer
	flater   *flate.Writer
}

func newSpanRecorder(fixed int64, emit func(Span) error) *spanRecorder {
	r := &spanRecorder{fixed: fixed, emit: emit, hasher: chunkHasher{h: sha256.New()}}
	if fixed > 0 {
		r.started = true // the first fixed span starts at 0
	}
	return r
}

// Write takes the next bytes of the uncompressed stream.
func (r *spanRecorder) Write(p []byte) (int, error) {
	n := len(p)
	if r.fixed > 0 {
		for len(p) > 0 {
			room := r.fixed - (r.written - r.current.Out)
			chunk := p
			if int64(len(chunk)) > room {
				chunk = p[:room]
			}
			r.hasher.Write(chunk)
			r.written += int64(len(chunk))
			p = p[len(chunk):]
			if r.written-r.current.Out == r.fixed {
				if err := r.finishSpan(); err != nil {
					return 0, err
				}
				r.current = Span{Out: r.written}
			}
		}
		return n, nil
	}
	r.pending = append(r.pending, p...)
	r.written += int64(n)
	if len(r.pending) > maxPendingSpanBytes {
		return 0, fmt.Errorf("no checkpoint possible within %d bytes of output at offset %d", maxPendingSpanBytes, r.pending0)
	}
	return n, r.cutReached()
}

// Checkpoint starts a new span at output offset out. The window is
// compressed at once because the indexer reuses its buffer.
func (r *spanRecorder) Checkpoint(out, in int64, bits uint8, memberStart bool, window []byte) error {
	sp := Span{Out: out, In: in, Bits: bits, MemberStart: memberStart}
	if len(window) > 0 {
		w, err := r.compressWindow(window)
		if err != nil {
			return err
		}
		sp.Window = w
	}
	if n := len(r.queued); (n > 0 && out <= r.queued[n-1].Out) || (n == 0 && r.started && out <= r.current.Out) {
		return fmt.Errorf("checkpoint at offset %d is not after the previous one", out)
	}
	r.queued = append(r.queued, sp)
	return r.cutReached()
}

// cutReached starts every queued span whose start the bytes have reached.
func (r *spanRecorder) cutReached() error {
	for len(r.queued) > 0 && r.queued[0].Out <= r.written {
		next := r.queued[0]
		r.queued = r.queued[1:]
		if r.started {
			if err := r.hashPendingUpTo(next.Out); err != nil {
				return err
			}
			if err := r.finishSpan(); err != nil {
				return err
			}
		}
		r.started = true
		r.current = next
	}
	return nil
}

func (r *spanRecorder) hashPendingUpTo(out int64) error {
	k := out - r.pending0
	if k < 0 || k > int64(len(r.pending)) {
		return fmt.Errorf("checkpoint at offset %d outside pending bytes [%d, %d)", out, r.pending0, r.pending0+int64(len(r.pending)))
	}
	r.hasher.Write(r.pending[:k])
	// Shift instead of reslicing so the buffer does not grow without end.
	r.pending = r.pending[:copy(r.pending, r.pending[k:])]
	r.pending0 = out
	return nil
}

func (r *spanRecorder) finishSpan() error {
	r.current.Digests = r.hasher.finish()
	r.count++
	return r.emit(r.current)
}

// Close hashes what is left into the last span and emits it.
func (r *spanRecorder) Close() error {
	if r.fixed > 0 {
		if r.written > r.current.Out || r.written == 0 {
			return r.finishSpan()
		}
		return nil
	}
	if !r.started || len(r.queued) > 0 {
		return fmt.Errorf("stream of %d bytes ended with checkpoints missing or beyond its end", r.written)
	}
	if err := r.hashPendingUpTo(r.written); err != nil {
		return err
	}
	return r.finishSpan()
}

func (r *spanRecorder) compressWindow(window []byte) ([]byte, error) {
	r.window.Reset()
	if r.flater == nil {
		w, err := flate.NewWriter(&r.window, flate.DefaultCompression)
		if err != nil {
			return nil, err
		}
		r.flater = w
	} else {
		r.flater.Reset(&r.window)
	}
	if _, err := r.flater.Write(window); err != nil {
		return nil, err
	}
	if err := r.flater.Close(); err != nil {
		return nil, err
	}
	return bytes.Clone(r.window.Bytes()), nil
}

// chunkHasher hashes a span's bytes in VerifyChunkSize pieces counted from
// the span's start.
type chunkHasher struct {
	h       hash.Hash
	fill    int
	digests []byte
}

func (c *chunkHasher) Write(p []byte) {
	for len(p) > 0 {
		n := min(len(p), VerifyChunkSize-c.fill)
		c.h.Write(p[:n])
		c.fill += n
		p = p[n:]
		if c.fill == VerifyChunkSize {
			c.digests = c.h.Sum(c.digests)
			c.h.Reset()
			c.fill = 0
		}
	}
}

// finish returns the digests of the span, the last chunk possibly short,
// and starts a new span.
func (c *chunkHasher) finish() []byte {
	if c.fill > 0 {
		c.digests = c.h.Sum(c.digests)
		c.h.Reset()
		c.fill = 0
	}
	d := c.digests
	c.digests = nil
	return d
}
