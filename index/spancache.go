package index

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

type spanKey struct {
	layer digest.Digest
	span  int
}

// spanCache is an LRU of inflated spans bounded by bytes. Concurrent misses
// on one span share a single inflation, because the kernel's readahead
// routinely asks for neighbouring pages of one span at once.
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
	data []byte
}

type inflight struct {
	done chan struct{}
	data []byte
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

// get returns the span's bytes, calling load at most once for concurrent
// callers that miss.
func (c *spanCache) get(key spanKey, load func() ([]byte, error)) ([]byte, error) {
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

	f.data, f.err = load()

	c.mu.Lock()
	delete(c.inflight, key)
	if f.err == nil {
		c.add(key, f.data)
	}
	c.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

func (c *spanCache) add(key spanKey, data []byte) {
	if int64(len(data)) > c.capacity {
		return
	}
	c.byKey[key] = c.order.PushFront(&cachedSpan{key: key, data: data})
	c.used += int64(len(data))
	for c.used > c.capacity {
		el := c.order.Back()
		s := el.Value.(*cachedSpan)
		c.order.Remove(el)
		delete(c.byKey, s.key)
		c.used -= int64(len(s.data))
	}
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
