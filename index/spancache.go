package index

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

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
	next    io.ReadCloser
	digests []byte
	err     error // sticky: a span that failed verification stays failed
}

// ensure extends the verified prefix to at least need bytes and returns it.
func (s *spanData) ensure(need int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) < need {
		if s.err != nil {
			return nil, s.err
		}
		if s.next == nil {
			return nil, errSpanDropped
		}
		start := len(s.buf)
		end := min(start+VerifyChunkSize, cap(s.buf))
		chunk := s.buf[start:end]
		if _, err := io.ReadFull(s.next, chunk); err != nil {
			s.fail(fmt.Errorf("inflating bytes %d-%d of the span: %w", start, end, err))
			continue
		}
		i := start / VerifyChunkSize
		if sum := sha256.Sum256(chunk); !bytes.Equal(sum[:], s.digests[i*32:(i+1)*32]) {
			s.fail(fmt.Errorf("bytes %d-%d of the span: %w", start, end, ErrSpanCorrupt))
			continue
		}
		s.buf = s.buf[:end]
		if end == cap(s.buf) {
			s.close()
		}
	}
	return s.buf, nil
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
	release(evicted)
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

// release closes the inflaters of evicted spans, waiting for a read that
// is using one, so zlib state is never freed under it.
func release(spans []*spanData) {
	for _, s := range spans {
		s.mu.Lock()
		s.close()
		s.mu.Unlock()
	}
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
	release(all)
}

// CacheStats reports the span cache's use.
type CacheStats struct {
	Hits, Misses, Bytes, Capacity int64
}

func (c *spanCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits, Misses: c.misses, Bytes: c.used, Capacity: c.capacity}
}
