package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"

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
	// ctx ends with Close, which so cancels the reads in flight. It does
	// not come from Open's context: a blob outlives the call that opened it.
	ctx    context.Context
	cancel context.CancelFunc
}

func (b *remoteBlob) Size() int64 { return b.size }

// Close cancels the reads in flight; later reads fail with os.ErrClosed.
func (b *remoteBlob) Close() error {
	b.cancel()
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
		n := min(want-done, b.src.reg.maxRequest)
		got, err := b.readRange(p[done:done+n], off+done)
		done += int64(got)
		if err != nil {
			return int(done), err
		}
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
	err := b.src.reg.retry.do(b.ctx, func(ctx context.Context) error {
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
	end := off + int64(len(q)) - 1
	what := fmt.Sprintf("GET bytes %d-%d", off, end)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, fromConnection(unwrapURL(err)))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return 0, &shortBodyError{fmt.Errorf("%s: %w", what, err)}
		case cr.first != off || cr.last < cr.first || cr.last > end:
			return 0, &shortBodyError{fmt.Errorf("%s: the registry answered bytes %d-%d", what, cr.first, cr.last)}
		case cr.total >= 0 && cr.total != b.size:
			return 0, fmt.Errorf("%s: the registry says the blob has %d bytes, it had %d at open", what, cr.total, b.size)
		case resp.ContentLength >= 0 && resp.ContentLength != cr.last-cr.first+1:
			return 0, &shortBodyError{fmt.Errorf("%s: Content-Length %d does not match Content-Range %d-%d", what, resp.ContentLength, cr.first, cr.last)}
		}
		n, err := io.ReadFull(resp.Body, q[:cr.last-cr.first+1])
		if err != nil {
			return n, &shortBodyError{fmt.Errorf("%s: body ended after %d of %d bytes: %w", what, n, cr.last-cr.first+1, err)}
		}
		// Reaching the end of the body lets the connection be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
		return n, nil
	case http.StatusOK:
		// The registry ignored the range and sends the whole blob: skip
		// to off. Correct, if slow; the connection is dropped after q.
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			return 0, fmt.Errorf("%s: the registry sends %d bytes for a blob of %d", what, resp.ContentLength, b.size)
		}
		if skipped, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return 0, &shortBodyError{fmt.Errorf("%s: the whole blob came back and ended after %d bytes: %w", what, skipped, err)}
		}
		n, err := io.ReadFull(resp.Body, q)
		if err != nil {
			return n, &shortBodyError{fmt.Errorf("%s: the whole blob came back and ended early: %w", what, err)}
		}
		return n, nil
	case http.StatusNotFound:
		return 0, fmt.Errorf("%s: the registry no longer has the blob: %w", what, fs.ErrNotExist)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return 0, newStatusError(what, resp)
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
