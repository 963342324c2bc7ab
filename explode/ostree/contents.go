package ostree

import (
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
// smallFile bytes, so 16 MiB in all) are read ahead of the writers, so
// that inflating them (on the reader goroutine) overlaps hashing and
// writing them (on the repository's writer threads). A large file is read
// by the writer that writes it, so that while it inflates and hashes one,
// the reader and the other writers go on with the files after it.
const (
	readAheadFiles = 64
	smallFile      = 256 << 10
)

// fileContent is a file read ahead of its write: a small file whole, in
// buf, a large one not yet.
type fileContent struct {
	f    regularFile
	data []byte
	buf  *[]byte
	err  error
}

// writeContents reads files on one goroutine and writes them on
// Options.Writers of the repository's writer threads.
func (c *imageCommit) writeContents(ctx context.Context, files []regularFile) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	contents := make(chan fileContent, readAheadFiles)
	go c.readAhead(ctx, files, contents)
	var wg sync.WaitGroup
	for range c.m.opts.Writers {
		wg.Go(func() {
			// The loop runs on a writer thread: no hop between threads
			// per file.
			err := c.txn.OnWriter(func(w *libostree.Writer) error {
				for fc := range contents {
					if err := c.writeContent(ctx, w, fc); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				cancel(err)
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

// writeContent writes one file on w's thread.
func (c *imageCommit) writeContent(ctx context.Context, w *libostree.Writer, fc fileContent) error {
	f := fc.f
	if fc.err != nil {
		return c.fileError(f, fc.err)
	}
	defer c.putBuffer(fc.buf)
	dedupe := f.size <= sameMax
	var key sameContent
	if dedupe {
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
	meta := fileMeta(&in, syscall.S_IFREG)
	var sum libostree.Checksum
	var err error
	if f.size > smallFile {
		sum, err = w.WriteFile(meta, f.size, c.fileReader(ctx, f, true))
	} else {
		sum, err = w.WriteBytes(meta, fc.data)
	}
	if err != nil {
		return c.fileError(f, err)
	}
	if dedupe {
		c.mu.Lock()
		if len(c.same) < maxSameContents {
			c.same[key] = sum
		}
		c.mu.Unlock()
	}
	c.done(f, sum, true)
	return nil
}

// Small files are read into buffers of smallFile bytes that go back to a
// pool once written, so that the read-ahead does not allocate (and the
// kernel zero) a fresh buffer for each.
func (c *imageCommit) getBuffer() *[]byte {
	if p, ok := c.buffers.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, smallFile)
	return &b
}

func (c *imageCommit) putBuffer(p *[]byte) {
	if p != nil {
		c.buffers.Put(p)
	}
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

// readAhead reads small files in order for writeContents, giving way to
// foreground reads before each file, and passes large ones on unread.
func (c *imageCommit) readAhead(ctx context.Context, files []regularFile, contents chan<- fileContent) {
	defer close(contents)
	for _, f := range files {
		if _, err := c.m.reader.YieldToForeground(ctx, c.m.opts.YieldQuiet, c.m.opts.YieldMax); err != nil {
			return
		}
		fc := fileContent{f: f}
		if f.size <= smallFile {
			fc.buf = c.getBuffer()
			fc.data = (*fc.buf)[:f.size]
			_, fc.err = io.ReadFull(c.fileReader(ctx, f, false), fc.data)
		}
		select {
		case contents <- fc:
		case <-ctx.Done():
			return
		}
	}
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
// takes (about 100 bytes an entry), and sameMax the files it looks at:
// past it, hashing the bytes twice costs more than a temporary file.
const (
	maxSameContents = 1 << 18
	sameMax         = 64 << 10
)

func (c *imageCommit) fileError(f regularFile, err error) error {
	p, _ := c.view.Path(f.ino)
	return fmt.Errorf("file %s (layer %s, offset %d): %w", p, c.view.Layers()[f.layer], f.off, err)
}

// fileReader reads a file's bytes through the lazy reader, holes of
// sparse files included; with yield, each read first gives way to
// foreground reads.
func (c *imageCommit) fileReader(ctx context.Context, f regularFile, yield bool) io.Reader {
	in, _ := c.view.Stat(f.ino)
	layer := c.view.Layers()[f.layer]
	return io.NewSectionReader(readerAtFunc(func(p []byte, off int64) (int, error) {
		if yield {
			if _, err := c.m.reader.YieldToForeground(ctx, c.m.opts.YieldQuiet, c.m.opts.YieldMax); err != nil {
				return 0, err
			}
		}
		return index.ReadFile(ctx, c.m.reader, layer, &in, p, off)
	}), 0, f.size)
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }
