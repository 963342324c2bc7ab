package index

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
)

type spanKey struct {
	layer digest.Digest
	span  int
}

// errSpanDropped tells a reader that the span it was extending left the
// cache; it fetches the span again.
var errSpanDropped = errors.New("span left the cache")

// spanData is one span being inflated: the prefix verified so far and the
// inflater positioned right after it. Reads extend it only as far as they
// need, one verified chunk at a time.
type spanData struct {
	size    int64 // the span's length; fixed, so the cache reads it unlocked
	mu      sync.Mutex
	buf     []byte // len: verified bytes; cap: the span's length
	backing []byte // the pooled array behind buf, if any
	next    io.ReadCloser
	digests []byte
	err     error // sticky: a span that failed verification stays failed
	// inflated, when set, counts the bytes next inflates: set for spans
	// of gzip layers only, whose reads cost decompression.
	inflated *atomic.Int64
}

// readAt copies span bytes at off into p, inflating and verifying as far
// as p reaches. The copy happens under the lock because an evicted span's
// buffer is recycled for another span. The lock is let go after every
// chunk, so a reader waits for the chunk it needs, not for a prefetch of
// the whole span.
func (s *spanData) readAt(p []byte, off int) (int, error) {
	need := off + len(p)
	for {
		s.mu.Lock()
		if len(s.buf) >= need {
			n := copy(p, s.buf[off:])
			s.mu.Unlock()
			return n, nil
		}
		err := s.inflateChunk()
		s.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
}

// inflateChunk verifies the next chunk of the span into buf.
func (s *spanData) inflateChunk() error {
	if s.err != nil {
		return s.err
	}
	if s.next == nil {
		return errSpanDropped
	}
	start := len(s.buf)
	end := min(start+VerifyChunkSize, cap(s.buf))
	chunk := s.buf[start:end]
	if _, err := io.ReadFull(s.next, chunk); err != nil {
		s.fail(fmt.Errorf("inflating bytes %d-%d of the span: %w", start, end, err))
		return s.err
	}
	if s.inflated != nil {
		s.inflated.Add(int64(end - start))
	}
	i := start / VerifyChunkSize
	if sum := sha256.Sum256(chunk); !bytes.Equal(sum[:], s.digests[i*32:(i+1)*32]) {
		s.fail(fmt.Errorf("bytes %d-%d of the span: %w", start, end, ErrSpanCorrupt))
		return s.err
	}
	s.buf = s.buf[:end]
	if end == cap(s.buf) {
		s.close()
	}
	return nil
}

func (s *spanData) fail(err error) {
	s.err = err
	s.close()
}

func (s *spanData) close() {
	if s.next != nil {
		_ = s.next.Close()
		s.next = nil
	}
}

// spanCache is an LRU of spans bounded by their full lengths. Concurrent
// misses on one span share one spanData, because the kernel's readahead
// asks for neighbouring pages of one span at once.
type spanCache struct {
	mu       sync.Mutex
	capacity int64
	used     int64
	order    *list.List // front is most recent; values are *cachedSpan
	byKey    map[spanKey]*list.Element
	inflight map[spanKey]*inflight
	hits     int64
	misses   int64
	// inflated is apart from mu: spans add to it chunk by chunk while
	// they inflate, under their own locks.
	inflated atomic.Int64
	buffers  bufferPool
}

type cachedSpan struct {
	key  spanKey
	data *spanData
}

type inflight struct {
	done chan struct{}
	data *spanData
	err  error
}

func newSpanCache(capacity int64) *spanCache {
	return &spanCache{
		capacity: capacity,
		order:    list.New(),
		byKey:    map[spanKey]*list.Element{},
		inflight: map[spanKey]*inflight{},
		buffers:  newBufferPool(spanBufferSize),
	}
}

// get returns the span, calling open at most once for concurrent misses.
func (c *spanCache) get(key spanKey, open func() (*spanData, error)) (*spanData, error) {
	c.mu.Lock()
	if el, ok := c.byKey[key]; ok {
		c.order.MoveToFront(el)
		c.hits++
		c.mu.Unlock()
		return el.Value.(*cachedSpan).data, nil
	}
	if f, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		<-f.done
		return f.data, f.err
	}
	c.misses++
	f := &inflight{done: make(chan struct{})}
	c.inflight[key] = f
	c.mu.Unlock()

	f.data, f.err = open()

	c.mu.Lock()
	delete(c.inflight, key)
	var evicted []*spanData
	if f.err == nil {
		evicted = c.add(key, f.data)
	}
	c.mu.Unlock()
	close(f.done)
	c.release(evicted)
	return f.data, f.err
}

// contains reports whether the span is cached or being opened.
func (c *spanCache) contains(key spanKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, cached := c.byKey[key]
	_, opening := c.inflight[key]
	return cached || opening
}

func (c *spanCache) add(key spanKey, data *spanData) []*spanData {
	c.byKey[key] = c.order.PushFront(&cachedSpan{key: key, data: data})
	c.used += data.size
	var evicted []*spanData
	for c.used > c.capacity && c.order.Len() > 1 {
		el := c.order.Back()
		s := el.Value.(*cachedSpan)
		c.order.Remove(el)
		delete(c.byKey, s.key)
		c.used -= s.data.size
		evicted = append(evicted, s.data)
	}
	return evicted
}

// release closes the inflaters of evicted spans and recycles their
// buffers, waiting for a read that is using one, so neither is freed under
// it. A reader still holding the span gets errSpanDropped and reopens it.
func (c *spanCache) release(spans []*spanData) {
	for _, s := range spans {
		s.mu.Lock()
		s.close()
		if s.err == nil {
			s.err = errSpanDropped
		}
		c.buffers.put(s.backing)
		s.buf, s.backing = nil, nil
		s.mu.Unlock()
	}
}

// remove drops key from the cache if it still holds data.
func (c *spanCache) remove(key spanKey, data *spanData) {
	c.mu.Lock()
	el, ok := c.byKey[key]
	if !ok || el.Value.(*cachedSpan).data != data {
		c.mu.Unlock()
		return
	}
	c.order.Remove(el)
	delete(c.byKey, key)
	c.used -= data.size
	c.mu.Unlock()
	c.release([]*spanData{data})
}

// dropLayer drops every cached span of layer.
func (c *spanCache) dropLayer(layer digest.Digest) {
	c.mu.Lock()
	var gone []*spanData
	for el := c.order.Front(); el != nil; {
		next := el.Next()
		if s := el.Value.(*cachedSpan); s.key.layer == layer {
			c.order.Remove(el)
			delete(c.byKey, s.key)
			c.used -= s.data.size
			gone = append(gone, s.data)
		}
		el = next
	}
	c.mu.Unlock()
	c.release(gone)
}

func (c *spanCache) clear() {
	c.mu.Lock()
	var all []*spanData
	for el := c.order.Front(); el != nil; el = el.Next() {
		all = append(all, el.Value.(*cachedSpan).data)
	}
	c.order.Init()
	c.byKey = map[spanKey]*list.Element{}
	c.used = 0
	c.mu.Unlock()
	c.release(all)
}

// CacheStats reports the span cache's use.
type CacheStats struct {
	Hits, Misses, Bytes, Capacity int64
	// Inflated counts the bytes inflated from gzip checkpoints into spans
	// since the Reader was made, by reads and by their prefetch: the
	// decompression work lazy reads cost. Uncompressed layers and zstd
	// copies are read without inflating and do not count.
	Inflated int64
}

func (c *spanCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits, Misses: c.misses, Bytes: c.used, Capacity: c.capacity, Inflated: c.inflated.Load()}
}

// spanBufferSize fits every span of the default spacing: the indexer cuts
// at most DefaultSpanSize apart unless one deflate block is longer.
const spanBufferSize = DefaultSpanSize + 256<<10

// bufferPool recycles span buffers. Fresh memory costs a page fault per
// 4 KiB on first write, which made a cold full read of an image spend as
// long faulting in buffers as inflating into them. It is a free list of
// at most spareSpanBuffers, not a sync.Pool: a pool is emptied by every
// garbage collection, and a long sequential read (a materialization)
// then faults in fresh buffers all along.
type bufferPool struct {
	size  int
	spare chan *[]byte
}

// spareSpanBuffers bounds the buffers kept for reuse: a cache at capacity
// frees one span for each it fills, so a few are enough.
const spareSpanBuffers = 8

func newBufferPool(size int) bufferPool {
	return bufferPool{size: size, spare: make(chan *[]byte, spareSpanBuffers)}
}

// get returns an empty buffer with capacity n, and the pooled array
// behind it (nil when n is too big to pool) to hand back to put.
func (p *bufferPool) get(n int) (buf, backing []byte) {
	if n > p.size {
		return make([]byte, 0, n), nil
	}
	var b *[]byte
	select {
	case b = <-p.spare:
	default:
		fresh := make([]byte, p.size)
		b = &fresh
	}
	return (*b)[:0:n], *b
}

func (p *bufferPool) put(backing []byte) {
	if backing == nil {
		return
	}
	select {
	case p.spare <- &backing:
	default:
	}
}
