package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/explodefs/explodefs/index"
	"github.com/opencontainers/go-digest"
)

// remoteBlob reads a blob with Range requests, straight into the caller's
// buffer: nothing is held beyond what one ReadAt asks for.
type remoteBlob struct {
	src    *Source
	client *http.Client
	d      digest.Digest
	url    string
	size   int64
	ahead  readAhead
	// ctx ends with Close, which so cancels the reads in flight. It does
	// not come from Open's context: a blob outlives the call that opened it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	streams []*stream // parked, oldest first
	marks   []mark    // ends of recent reads, oldest first
}

func (b *remoteBlob) Size() int64 { return b.size }

// remoteReadSize is how much compressed input the lazy reader asks for at
// once: a request costs the registry a few milliseconds whatever its size,
// and 256 KiB usually holds all that a cold random read inflates from its
// checkpoint, so it costs one request rather than a request and a stream.
const remoteReadSize = 256 << 10

var _ index.ReadSizer = (*remoteBlob)(nil)

// ReadSize implements index.ReadSizer.
func (b *remoteBlob) ReadSize() int { return remoteReadSize }

// Close cancels the reads in flight and closes parked streams; later
// reads fail with os.ErrClosed.
func (b *remoteBlob) Close() error {
	b.cancel()
	b.closeStreams()
	return nil
}

// ReadAt implements io.ReaderAt: it returns len(p) bytes, or fewer with
// io.EOF only at the end of the blob, or an error. A body cut short is
// never passed off as a shorter read.
func (b *remoteBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.readAt(p, off)
	if err != nil && err != io.EOF {
		err = b.src.secrets.redact(fmt.Errorf("blob %s of %s: %w", b.d, b.src, err))
	}
	return n, err
}

func (b *remoteBlob) readAt(p []byte, off int64) (int, error) {
	switch {
	case off < 0:
		return 0, fmt.Errorf("read at negative offset %d", off)
	case b.ctx.Err() != nil:
		return 0, fmt.Errorf("read after Close: %w", os.ErrClosed)
	case off >= b.size:
		return 0, io.EOF
	}
	want := min(int64(len(p)), b.size-off)
	var done int64
	for done < want {
		q := p[done:min(want, done+b.src.reg.maxRequest)]
		got := int64(b.readSequential(q, off+done))
		if got < int64(len(q)) {
			n, err := b.readRange(q[got:], off+done+got)
			got += int64(n)
			if err != nil {
				return int(done + got), err
			}
		}
		done += got
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// readRange fills q with the bytes at off, retrying from where the last
// attempt stopped.
func (b *remoteBlob) readRange(q []byte, off int64) (int, error) {
	got := 0
	err := b.src.reg.try(b.ctx, OpBlobRead, func(ctx context.Context) error {
		for got < len(q) {
			n, err := b.fetch(ctx, q[got:], off+int64(got))
			got += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && b.ctx.Err() != nil {
		return got, fmt.Errorf("read cut off by Close: %w", os.ErrClosed)
	}
	return got, err
}

// fetch asks for the bytes of q at off and reads what the registry sends
// into q: all of q, a prefix of it if the registry sent a shorter range,
// or some bytes and an error.
func (b *remoteBlob) fetch(ctx context.Context, q []byte, off int64) (int, error) {
	resp, r, err := b.request(ctx, off, off+int64(len(q))-1)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	what := fmt.Sprintf("GET bytes %d-%d", off, off+int64(len(q))-1)
	if r.whole {
		// The registry ignored the range and sends the whole blob: skip
		// to off. Correct, if slow; the connection is dropped after q.
		if skipped, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return 0, &shortBodyError{fmt.Errorf("%s: the whole blob came back and ended after %d bytes: %w", what, skipped, err)}
		}
		n, err := io.ReadFull(resp.Body, q)
		if err != nil {
			return n, &shortBodyError{fmt.Errorf("%s: the whole blob came back and ended early: %w", what, err)}
		}
		return n, nil
	}
	length := r.last - r.first + 1
	n, err := io.ReadFull(resp.Body, q[:length])
	if err != nil {
		return n, &shortBodyError{fmt.Errorf("%s: body ended after %d of %d bytes: %w", what, n, length, err)}
	}
	// Reaching the end of the body lets the connection be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	return n, nil
}

// contentRange is a parsed "Content-Range: bytes first-last/total"; total
// is -1 for "*".
type contentRange struct {
	first, last, total int64
}

func parseContentRange(h string) (contentRange, error) {
	bad := fmt.Errorf("malformed Content-Range %q", h)
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return contentRange{}, bad
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return contentRange{}, bad
	}
	cr := contentRange{first: -1, last: -1, total: -1}
	if total != "*" {
		t, err := strconv.ParseInt(total, 10, 64)
		if err != nil || t < 0 {
			return contentRange{}, bad
		}
		cr.total = t
	}
	if rng == "*" {
		return cr, nil
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return contentRange{}, bad
	}
	var err1, err2 error
	cr.first, err1 = strconv.ParseInt(first, 10, 64)
	cr.last, err2 = strconv.ParseInt(last, 10, 64)
	if err := errors.Join(err1, err2); err != nil || cr.first < 0 {
		return contentRange{}, bad
	}
	return cr, nil
}
