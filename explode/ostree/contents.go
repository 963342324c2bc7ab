package ostree

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/index"
)

// Read-ahead bounds. Small files (up to smallFile bytes) are read ahead
// of the writers into batches of up to batchBytes and batchFiles, and a
// batch is written in one call into libostree: one handoff between
// threads, and one call, for many files. Up to readAheadBatches wait for a
// writer, so that inflating them (on the readers' goroutines) overlaps
// hashing and writing them (on the repository's writer threads). A large
// file is read by the writer that writes it, so that while it inflates
// and hashes one, the readers and the other writers go on with the files
// after it.
const (
	smallFile        = 256 << 10
	batchBytes       = 1 << 20
	batchFiles       = 64
	readAheadBatches = 8
)

// batch is what the reader hands a writer: small files read whole into
// one buffer, or one large file not read yet, or the error that stopped
// the reader at file f.
type batch struct {
	small []smallContent
	buf   *[]byte
	large *regularFile
	f     regularFile
	err   error
}

// smallContent is a small file of a batch, at off in the batch's buffer.
type smallContent struct {
	f   regularFile
	off int
}

// writeContents reads files on up to readers goroutines, a layer each,
// and writes them on
// Options.Writers of the repository's writer threads.
func (c *imageCommit) writeContents(ctx context.Context, files []regularFile) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan batch, readAheadBatches)
	c.buffers = make(chan *[]byte, readAheadBatches+c.m.opts.Writers+1)
	go c.readLayers(ctx, files, batches)
	stopWriteBack := make(chan struct{})
	defer close(stopWriteBack)
	go c.writeBack(stopWriteBack)
	var wg sync.WaitGroup
	for range c.m.opts.Writers {
		wg.Go(func() {
			// The loop runs on a writer thread: no hop between threads
			// per batch.
			err := c.txn.OnWriter(func(w *libostree.Writer) error {
				for b := range batches {
					if err := c.writeBatch(ctx, w, b); err != nil {
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

// writeBackBytes is how many bytes of objects are written between two
// write-backs of the repository's filesystem.
const writeBackBytes = 64 << 20

// writeBack has the repository's filesystem write back the objects the
// commit wrote, each time another writeBackBytes were written, until stop
// closes. The transaction's commit syncs the filesystem anyway; without
// this it would wait there for the whole image to reach the disk, which
// sat idle while the files were inflated, hashed and written. It is best
// effort: a failure here fails the commit's own sync, if it persists.
func (c *imageCommit) writeBack(stop <-chan struct{}) {
	fd, err := unix.Open(c.m.repo.Path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if done := c.bytesDone.Load(); done-last >= writeBackBytes {
			last = done
			_ = unix.Syncfs(fd)
		}
	}
}

// writeBatch writes one batch on w's thread.
func (c *imageCommit) writeBatch(ctx context.Context, w *libostree.Writer, b batch) error {
	if b.err != nil {
		return c.fileError(b.f, b.err)
	}
	if b.large != nil {
		f := *b.large
		in, _ := c.view.Stat(f.ino)
		obj, err := w.WriteFile(fileMeta(&in, syscall.S_IFREG), f.size, c.fileReader(ctx, f, true))
		if err != nil {
			return c.fileError(f, err)
		}
		c.done(f, obj)
		return nil
	}
	defer c.putBuffer(b.buf)
	files := make([]libostree.BatchFile, len(b.small))
	for i, sc := range b.small {
		in, _ := c.view.Stat(sc.f.ino)
		files[i] = libostree.BatchFile{Meta: fileMeta(&in, syscall.S_IFREG), Off: sc.off, Len: int(sc.f.size)}
	}
	objs := make([]libostree.Object, len(files))
	n, err := w.WriteBatch(*b.buf, files, objs)
	for i := range n {
		c.done(b.small[i].f, objs[i])
	}
	if err != nil {
		return c.fileError(b.small[n].f, err)
	}
	return nil
}

// Batches are read into buffers of batchBytes that go back to a free list
// once written, so that the read-ahead neither allocates (and the kernel
// zeroes) a fresh buffer for each nor loses its buffers at every garbage
// collection, as a sync.Pool would.
func (c *imageCommit) getBuffer() *[]byte {
	select {
	case p := <-c.buffers:
		return p
	default:
		b := make([]byte, batchBytes)
		return &b
	}
}

func (c *imageCommit) putBuffer(p *[]byte) {
	select {
	case c.buffers <- p:
	default:
	}
}

// done records file f's object, which the commit wrote or found written.
func (c *imageCommit) done(f regularFile, obj libostree.Object) {
	layer := c.view.Layers()[f.layer]
	c.mu.Lock()
	c.sums[f.ino] = obj.Sum
	if f.size > 0 {
		// An empty file costs nothing to read, and the writer finds its
		// object after the first: not worth a record in the index.
		c.added[layer] = append(c.added[layer], index.ContentObject{Offset: f.off, Meta: f.meta, ID: index.ObjectID(obj.Sum)})
	}
	if obj.Written {
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

// readers is how many layers are read ahead at once. Each layer is one
// stream, inflated in order on one goroutine; two keep both cores of a
// small machine busy while the writers wait on the kernel.
const readers = 2

// readLayers runs a readAhead for each layer's run of files (files are in
// layer order), up to readers at once, and closes batches after the last.
func (c *imageCommit) readLayers(ctx context.Context, files []regularFile, batches chan<- batch) {
	defer close(batches)
	var wg sync.WaitGroup
	slots := make(chan struct{}, readers)
	for i := 0; i < len(files); {
		j := i
		for j < len(files) && files[j].layer == files[i].layer {
			j++
		}
		layer := files[i:j]
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-slots }()
			c.readAhead(ctx, layer, batches)
		})
		i = j
	}
	wg.Wait()
}

// readAhead reads small files in order into batches for writeContents,
// giving way to foreground reads before each file, and passes large ones
// on unread.
func (c *imageCommit) readAhead(ctx context.Context, files []regularFile, batches chan<- batch) {
	send := func(b batch) bool {
		select {
		case batches <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var cur batch
	used := 0
	flush := func() bool {
		if len(cur.small) == 0 {
			return true
		}
		b := cur
		cur, used = batch{}, 0
		return send(b)
	}
	for _, f := range files {
		if _, err := c.m.reader.YieldToForeground(ctx, c.m.opts.YieldQuiet, c.m.opts.YieldMax); err != nil {
			return
		}
		if f.size > smallFile {
			if !flush() || !send(batch{large: &f}) {
				return
			}
			continue
		}
		if len(cur.small) == batchFiles || used+int(f.size) > batchBytes {
			if !flush() {
				return
			}
		}
		if cur.buf == nil {
			cur.buf = c.getBuffer()
		}
		data := (*cur.buf)[used : used+int(f.size)]
		if _, err := io.ReadFull(c.fileReader(ctx, f, false), data); err != nil {
			if flush() {
				send(batch{f: f, err: err})
			}
			return
		}
		cur.small = append(cur.small, smallContent{f: f, off: used})
		used += int(f.size)
	}
	flush()
}

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
