package registry

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"time"
)

// Sequential reads are served from one long Range request instead of one
// request each. A registry spends milliseconds on every request (Debian's
// docker-registry with htpasswd: ~7 ms, most of it checking the password),
// so the layer pass, reading 256 KiB at a time, made 25 MB/s, and the lazy
// reader, inflating a span 64 KiB of input at a time, 7 MB/s
// (BenchmarkSequentialRead). Nothing is buffered: the bytes are read from
// the response body straight into the caller's buffer when asked for, and
// what the registry sent ahead waits in the socket.
//
// A read that starts where an earlier one ended opens a stream of the
// next readAhead.first bytes; a stream read to its end is followed by
// one twice as long, up to readAhead.max. A single random read never
// opens one. A parked stream is closed after parkTimeout unused, so idle
// blobs hold no connections.

// readAhead bounds the streams of sequential reads; max 0 turns them off.
type readAhead struct {
	first, max int64
}

const (
	defaultReadAheadFirst = 1 << 20
	defaultReadAheadMax   = 16 << 20
	// maxStreams per blob covers a reader and the span prefetch running
	// ahead of it, with room to spare.
	maxStreams = 4
	// maxMarks is how many recent read ends are remembered to spot
	// sequential readers.
	maxMarks    = 8
	parkTimeout = 5 * time.Second
)

// stream is an open Range response being read in order.
type stream struct {
	body     io.ReadCloser
	cancel   context.CancelFunc
	pos, end int64 // the next byte the body delivers; one past its last
	window   int64 // the length it was opened for
	expiry   *time.Timer
}

func (s *stream) close() {
	s.cancel()
	s.body.Close()
}

// read fills q from the stream, giving up after timeout.
func (s *stream) read(q []byte, timeout time.Duration) (int, error) {
	timer := time.AfterFunc(timeout, s.cancel)
	n, err := io.ReadFull(s.body, q)
	if !timer.Stop() && err == nil {
		// The timer fired as the read completed: the bytes are good, the
		// stream is not.
		s.end = s.pos + int64(n)
	}
	s.pos += int64(n)
	return n, err
}

// mark is the end of a recent read, and the window a stream opened there
// would get.
type mark struct {
	end, window int64
}

// takeStream returns the parked stream positioned at off, or else the
// window of a stream to open there when off continues a recent read (0
// when it does not).
func (b *remoteBlob) takeStream(off int64) (*stream, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, s := range b.streams {
		if s.pos == off {
			b.streams = append(b.streams[:i], b.streams[i+1:]...)
			s.expiry.Stop()
			return s, s.window
		}
	}
	for i, m := range b.marks {
		if m.end == off {
			b.marks = append(b.marks[:i], b.marks[i+1:]...)
			return nil, m.window
		}
	}
	return nil, 0
}

// park keeps s for the read that continues it.
func (b *remoteBlob) park(s *stream) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ctx.Err() != nil {
		s.close()
		return
	}
	if len(b.streams) == maxStreams {
		oldest := b.streams[0]
		oldest.expiry.Stop()
		oldest.close()
		b.streams = b.streams[1:]
	}
	s.expiry = time.AfterFunc(parkTimeout, func() { b.expire(s) })
	b.streams = append(b.streams, s)
}

func (b *remoteBlob) expire(s *stream) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, p := range b.streams {
		if p == s {
			b.streams = append(b.streams[:i], b.streams[i+1:]...)
			s.close()
			return
		}
	}
}

// remember notes that a read ended at end, so that a read starting there
// opens a stream of window bytes.
func (b *remoteBlob) remember(end, window int64) {
	if end >= b.size {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.marks) == maxMarks {
		b.marks = b.marks[1:]
	}
	b.marks = append(b.marks, mark{end: end, window: window})
}

func (b *remoteBlob) closeStreams() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.streams {
		s.expiry.Stop()
		s.close()
	}
	b.streams = nil
}

// openStream asks for window bytes at off, once: whatever goes wrong, the
// caller falls back to a plain read, which has the retries. A request
// that fails is reported to the ErrorObserver; an answer of another
// range is not, because plain reads cope with it.
func (b *remoteBlob) openStream(off, window int64) (*stream, error) {
	end := min(b.size, off+window)
	ctx, cancel := context.WithCancel(b.ctx)
	timer := time.AfterFunc(b.src.reg.retry.timeout, cancel)
	resp, cr, err := b.request(ctx, off, end-1)
	if !timer.Stop() && err == nil {
		err = fmt.Errorf("timed out: %w", context.DeadlineExceeded)
	}
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		b.src.reg.noteError(b.ctx, OpBlobRead, err)
		return nil, err
	}
	if cr.whole || cr.last != end-1 {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("the registry answered bytes %d-%d for a stream of %d-%d", cr.first, cr.last, off, end-1)
	}
	return &stream{body: resp.Body, cancel: cancel, pos: off, end: end, window: window}, nil
}

// readSequential reads q at off from a stream when off continues an
// earlier read, and returns how many bytes it got that way (the caller
// reads the rest with plain requests). It notes where the read ends, and
// the window a stream opened there gets.
func (b *remoteBlob) readSequential(q []byte, off int64) int {
	if b.ahead.max == 0 {
		return 0
	}
	s, window := b.takeStream(off)
	next := off + int64(len(q))
	if s == nil {
		switch {
		case window == 0:
			b.remember(next, b.ahead.first)
			return 0
		case min(b.size, off+window) <= next:
			// Nothing to read ahead of q with this window: a bigger
			// one next time.
			b.remember(next, b.grow(window))
			return 0
		}
		var err error
		if s, err = b.openStream(off, window); err != nil {
			b.remember(next, window)
			return 0
		}
	}
	n, err := s.read(q[:min(int64(len(q)), s.end-s.pos)], b.src.reg.retry.timeout)
	switch {
	case err == nil && s.pos < s.end:
		b.park(s)
	case err == nil:
		s.close()
		b.remember(next, b.grow(s.window))
	default:
		// A stream that stalled or ended early is a failed request
		// too, although a plain read takes over.
		b.src.reg.noteError(b.ctx, OpBlobRead, &shortBodyError{err})
		s.close()
		b.remember(next, s.window)
	}
	return n
}

func (b *remoteBlob) grow(window int64) int64 { return min(2*window, b.ahead.max) }

// response is a checked answer to a Range request: the range it holds, or
// the whole blob when the registry ignored the range.
type response struct {
	first, last int64
	whole       bool
}

// request asks for bytes first..last and checks the answer's headers: a
// 206 must hold a range starting at first and within what was asked, a
// 200 the whole blob.
func (b *remoteBlob) request(ctx context.Context, first, last int64) (*http.Response, response, error) {
	what := fmt.Sprintf("GET bytes %d-%d", first, last)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return nil, response{}, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, response{}, fmt.Errorf("%s: %w", what, fromConnection(unwrapURL(err)))
	}
	fail := func(err error) (*http.Response, response, error) {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, response{}, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return fail(&shortBodyError{fmt.Errorf("%s: %w", what, err)})
		case cr.first != first || cr.last < cr.first || cr.last > last:
			return fail(&shortBodyError{fmt.Errorf("%s: the registry answered bytes %d-%d", what, cr.first, cr.last)})
		case cr.total >= 0 && cr.total != b.size:
			return fail(fmt.Errorf("%s: the registry says the blob has %d bytes, it had %d at open", what, cr.total, b.size))
		case resp.ContentLength >= 0 && resp.ContentLength != cr.last-cr.first+1:
			return fail(&shortBodyError{fmt.Errorf("%s: Content-Length %d does not match Content-Range %d-%d", what, resp.ContentLength, cr.first, cr.last)})
		}
		return resp, response{first: cr.first, last: cr.last}, nil
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			return fail(fmt.Errorf("%s: the registry sends %d bytes for a blob of %d", what, resp.ContentLength, b.size))
		}
		return resp, response{first: 0, last: b.size - 1, whole: true}, nil
	case http.StatusNotFound:
		return fail(fmt.Errorf("%s: the registry no longer has the blob: %w", what, fs.ErrNotExist))
	}
	return fail(newStatusError(what, resp))
}
