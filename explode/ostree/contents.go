package ostree

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/index"
)

// Read-ahead bounds: up to readAheadFiles small files (each at most
// smallFile bytes) and chunkBuffers chunks of a large one are read ahead
// of the writer, so that inflating (on the reader goroutine) and hashing
// and writing (on the repository's thread) overlap, in at most
// 16 MiB + 6 MiB of memory.
const (
	readAheadFiles = 64
	smallFile      = 256 << 10
	chunkSize      = 1 << 20
	chunkBuffers   = 6
)

// fileContent is a file read ahead of its write: a small file whole, a
// large one as a stream of chunks.
type fileContent struct {
	f      regularFile
	data   []byte
	chunks chan chunk
	err    error
}

type chunk struct {
	data []byte
	err  error
}

// writeContents reads files on one goroutine and writes them on
// Options.Writers of the repository's writer threads.
func (c *imageCommit) writeContents(ctx context.Context, files []regularFile) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	contents := make(chan fileContent, readAheadFiles)
	free := make(chan []byte, chunkBuffers)
	for range chunkBuffers {
		free <- make([]byte, chunkSize)
	}
	go c.readAhead(ctx, files, contents, free)
	var wg sync.WaitGroup
	for range c.m.opts.Writers {
		wg.Go(func() {
			for fc := range contents {
				if err := c.writeContent(ctx, fc, free); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if done := c.filesDone.Load(); done != c.filesTotal {
		return fmt.Errorf("wrote %d of %d files", done, c.filesTotal)
	}
	return nil
}

// writeContent writes one file read ahead.
func (c *imageCommit) writeContent(ctx context.Context, fc fileContent, free chan []byte) error {
	f := fc.f
	if fc.err != nil {
		return c.fileError(f, fc.err)
	}
	var src io.Reader = bytes.NewReader(fc.data)
	var chunks *chunkReader
	if fc.chunks != nil {
		chunks = &chunkReader{ctx: ctx, chunks: fc.chunks, free: free}
		src = chunks
	}
	var key sameContent
	if chunks == nil {
		key = sameContent{sum: sha256.Sum256(fc.data), meta: f.meta}
		c.mu.Lock()
		sum, ok := c.same[key]
		c.mu.Unlock()
		if ok {
			c.done(f, sum, false)
			return nil
		}
	}
	in, _ := c.view.Stat(f.ino)
	sum, err := c.txn.WriteFile(fileMeta(&in, syscall.S_IFREG), f.size, src)
	if err != nil {
		return c.fileError(f, err)
	}
	if chunks != nil {
		// The writer reads exactly the file's size, never to EOF: hand
		// back the last buffer for the next large file.
		chunks.release()
	}
	if chunks == nil {
		c.mu.Lock()
		if len(c.same) < maxSameContents {
			c.same[key] = sum
		}
		c.mu.Unlock()
	}
	c.done(f, sum, true)
	return nil
}

// done records file f's object; written says this commit wrote it rather
// than found the same bytes and metadata written for another file.
func (c *imageCommit) done(f regularFile, sum libostree.Checksum, written bool) {
	layer := c.view.Layers()[f.layer]
	c.mu.Lock()
	c.sums[f.ino] = sum
	if f.size > 0 {
		// An empty file costs nothing to read, and c.same finds its
		// object after the first: not worth a record in the index.
		c.added[layer] = append(c.added[layer], index.ContentObject{Offset: f.off, Meta: f.meta, ID: index.ObjectID(sum)})
	}
	if written {
		c.stats.written++
		c.stats.bytesWritten += f.size
	} else {
		c.stats.same++
	}
	c.mu.Unlock()
	c.filesDone.Add(1)
	c.bytesDone.Add(f.size)
	c.report(false)
}

// sameContent identifies a small file's object before libostree hashes
// it: the sha256 of its bytes and its metadata's fingerprint. Images hold
// many identical small files (empty ones above all), and writing each
// costs libostree a temporary file even when the object exists.
type sameContent struct {
	sum  [sha256.Size]byte
	meta uint64
}

// maxSameContents bounds the memory an image's identical-file lookup
// takes (about 100 bytes an entry).
const maxSameContents = 1 << 18

// readAhead reads files in order for writeContents, giving way to
// foreground reads before each file and each chunk.
func (c *imageCommit) readAhead(ctx context.Context, files []regularFile, contents chan<- fileContent, free chan []byte) {
	defer close(contents)
	yield := func() bool {
		_, err := c.m.reader.YieldToForeground(ctx, c.m.opts.YieldQuiet, c.m.opts.YieldMax)
		return err == nil
	}
	for _, f := range files {
		if !yield() {
			return
		}
		fc := fileContent{f: f}
		if f.size <= smallFile {
			fc.data = make([]byte, f.size)
			_, fc.err = io.ReadFull(c.fileReader(ctx, f), fc.data)
		} else {
			fc.chunks = make(chan chunk, chunkBuffers)
		}
		select {
		case contents <- fc:
		case <-ctx.Done():
			return
		}
		if fc.chunks == nil {
			continue
		}
		r := c.fileReader(ctx, f)
		for left := f.size; left > 0; {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			if !yield() {
				return
			}
			n, err := io.ReadFull(r, buf[:min(left, int64(len(buf)))])
			left -= int64(n)
			select {
			case fc.chunks <- chunk{data: buf[:n], err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				break
			}
		}
		close(fc.chunks)
	}
}

// chunkReader reads a large file's chunks as they arrive and hands each
// buffer back once it is consumed.
type chunkReader struct {
	// ctx ends the wait for a chunk the reader goroutine gave up on.
	ctx    context.Context
	chunks <-chan chunk
	free   chan<- []byte
	cur    []byte
	buf    []byte
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.buf != nil {
			r.free <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		var ch chunk
		var ok bool
		select {
		case ch, ok = <-r.chunks:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
		if !ok {
			return 0, io.EOF
		}
		r.buf, r.cur, r.err = ch.data, ch.data, ch.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// release returns the buffers the reader holds or has yet to read.
func (r *chunkReader) release() {
	if r.buf != nil {
		r.free <- r.buf[:cap(r.buf)]
		r.buf, r.cur = nil, nil
	}
	for {
		select {
		case ch, ok := <-r.chunks:
			if !ok {
				return
			}
			r.free <- ch.data[:cap(ch.data)]
		case <-r.ctx.Done():
			return
		}
	}
}

func (c *imageCommit) fileError(f regularFile, err error) error {
	p, _ := c.view.Path(f.ino)
	return fmt.Errorf("file %s (layer %s, offset %d): %w", p, c.view.Layers()[f.layer], f.off, err)
}

// fileReader reads a file's bytes through the lazy reader, holes of
// sparse files included.
func (c *imageCommit) fileReader(ctx context.Context, f regularFile) io.Reader {
	in, _ := c.view.Stat(f.ino)
	layer := c.view.Layers()[f.layer]
	return io.NewSectionReader(readerAtFunc(func(p []byte, off int64) (int, error) {
		return index.ReadFile(ctx, c.m.reader, layer, &in, p, off)
	}), 0, f.size)
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }
