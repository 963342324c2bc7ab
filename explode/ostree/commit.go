package ostree

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// maxSkippedListed bounds the device and fifo paths a commit's metadata
// lists; the count is always exact.
const maxSkippedListed = 1000

// Commit metadata keys.
const (
	MetaImage    = "explodefs.image-digest"
	MetaManifest = "explodefs.manifest-digest"
	MetaConfig   = "explodefs.config-digest"
	MetaTags     = "explodefs.tags"
	MetaLayers   = "explodefs.layers"
	// MetaSkipped lists the paths of what OSTree cannot hold: device
	// nodes, fifos and sockets, and entries whose name or link target is
	// not UTF-8 (listed Go-quoted, with everything below them left out
	// too). MetaSkippedCount counts them; the list stops at 1000.
	MetaSkipped      = "explodefs.skipped"
	MetaSkippedCount = "explodefs.skipped-count"
)

// imageCommit is one image being written.
type imageCommit struct {
	m     *Materializer
	image digest.Digest
	view  *index.View
	txn   *libostree.Txn
	// mu guards sums, added and stats while writers run.
	mu sync.Mutex
	// buffers holds the read-ahead's batch buffers (contents.go).
	buffers chan *[]byte
	// sums holds the object of each regular file, by inode.
	sums []libostree.Checksum
	// added collects, per layer, the objects written for its entries, to
	// be remembered once the transaction committed.
	added   map[digest.Digest][]index.ContentObject
	dirMeta map[string]libostree.Checksum
	skipped []string
	nSkip   int

	filesDone, bytesDone atomic.Int64
	filesTotal           int64
	bytesTotal           int64
	started              time.Time
	lastReport           atomic.Int64 // UnixNano
	stats                commitStats
}

// commitStats says where a commit's time went, for the log.
type commitStats struct {
	// written counts regular files hashed and written, reused those
	// whose remembered object was found, same those whose object the
	// repository or another file of the image had.
	written, reused, same int64
	bytesWritten          int64
	// lookup covers finding remembered objects, contents reading and
	// writing the rest, publish making the files' objects durable, tree
	// the directories and symlinks, commit the tree objects and the
	// commit, and sync the transaction's fsync.
	lookup, contents, publish, tree, commit, sync time.Duration
}

func (s commitStats) logAttrs() []any {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return []any{"files_written", s.written, "files_reused", s.reused, "files_same", s.same, "bytes_written", s.bytesWritten,
		"lookup", ms(s.lookup), "contents", ms(s.contents), "publish", ms(s.publish), "tree", ms(s.tree), "commit", ms(s.commit), "sync", ms(s.sync)}
}

// regularFile is a file whose object the commit needs.
type regularFile struct {
	ino   index.Ino
	layer int
	off   int64
	size  int64
	meta  uint64
}

// commitImage writes the image's objects and commit in one transaction
// that also sets the image's ref, and returns the commit.
func (m *Materializer) commitImage(ctx context.Context, d digest.Digest, view *index.View, started time.Time) (libostree.Checksum, *imageCommit, error) {
	ctx = index.Background(ctx)
	c := &imageCommit{
		m: m, image: d, view: view,
		sums:    make([]libostree.Checksum, view.Len()+1),
		added:   map[digest.Digest][]index.ContentObject{},
		dirMeta: map[string]libostree.Checksum{},
		started: started,
	}
	commit, err := c.write(ctx)
	if err != nil {
		return commit, c, fmt.Errorf("image %s: %w", d, err)
	}
	return commit, c, nil
}

// write runs the commit's phases in one transaction.
func (c *imageCommit) write(ctx context.Context) (libostree.Checksum, error) {
	m, d := c.m, c.image
	txn, err := m.repo.Begin()
	if err != nil {
		return libostree.Checksum{}, err
	}
	defer txn.Abort()
	c.txn = txn
	if err := c.writeFiles(ctx); err != nil {
		return libostree.Checksum{}, err
	}
	phase := time.Now()
	if err := txn.PublishContent(); err != nil {
		return libostree.Checksum{}, err
	}
	c.stats.publish, phase = time.Since(phase), time.Now()
	root := libostree.NewTree()
	defer root.Free()
	if err := c.writeDir(ctx, index.RootIno, "/", root); err != nil {
		return libostree.Checksum{}, err
	}
	c.stats.tree, phase = time.Since(phase), time.Now()
	commit, err := txn.CommitTree(root, "explodefs "+d.String(), c.metadata(), time.Now())
	if err != nil {
		return libostree.Checksum{}, err
	}
	if err := txn.SetRef(ImageRef(d), commit); err != nil {
		return libostree.Checksum{}, err
	}
	c.stats.commit, phase = time.Since(phase), time.Now()
	if _, err := txn.Commit(); err != nil {
		return libostree.Checksum{}, err
	}
	c.stats.sync = time.Since(phase)
	// Only objects that are durable in the repository may be remembered.
	for layer, objs := range c.added {
		if err := m.store.PutContentObjects(context.WithoutCancel(ctx), layer, objs); err != nil {
			m.log.Warn("cannot remember content objects; the next image sharing the layer hashes it again",
				"image", d, "layer", layer, "err", err)
		}
	}
	c.report(true)
	return commit, nil
}

// progress is the commit's progress as the status shows it.
func (c *imageCommit) progress(state index.MaterialState) status.Materialization {
	return status.Materialization{
		State:      string(state),
		FilesDone:  c.filesDone.Load(),
		FilesTotal: c.filesTotal,
		BytesDone:  c.bytesDone.Load(),
		BytesTotal: c.bytesTotal,
		Started:    c.started,
	}
}

// writeFiles writes the object of every regular file the repository does
// not hold yet, in layer and offset order, so that each layer's stream is
// read front to back. A file whose entry's object the index remembers,
// and which the repository still holds, is neither read nor hashed again.
func (c *imageCommit) writeFiles(ctx context.Context) error {
	start := time.Now()
	layers := c.view.Layers()
	var files []regularFile
	for ino := index.RootIno; int(ino) <= c.view.Len(); ino++ {
		in, ok := c.view.Stat(ino)
		if !ok || in.Type != index.TypeRegular {
			continue
		}
		if in.Layer < 0 || in.Layer >= len(layers) {
			return fmt.Errorf("inode %d has no layer to read from", ino)
		}
		files = append(files, regularFile{ino: ino, layer: in.Layer, off: in.Offset, size: in.Size, meta: metaFingerprint(&in)})
		c.bytesTotal += in.Size
	}
	c.filesTotal = int64(len(files))
	slices.SortFunc(files, func(a, b regularFile) int {
		return cmp.Or(cmp.Compare(a.layer, b.layer), cmp.Compare(a.off, b.off), cmp.Compare(a.meta, b.meta))
	})
	// The files to write are compacted into files' own array: they are
	// appended in the order they are read, so never overtake it.
	todo := files[:0]
	for i := 0; i < len(files); {
		j := i
		for j < len(files) && files[j].layer == files[i].layer {
			j++
		}
		var err error
		if todo, err = c.reuseRemembered(ctx, layers[files[i].layer], files[i:j], todo); err != nil {
			return err
		}
		i = j
	}
	c.stats.lookup = time.Since(start)
	start = time.Now()
	err := c.writeContents(ctx, todo)
	c.stats.contents = time.Since(start)
	return err
}

// reuseRemembered walks the objects the index remembers for a layer's
// entries alongside the layer's files, both in (offset, metadata) order,
// takes every remembered object the repository still holds, and appends
// the other files to todo.
func (c *imageCommit) reuseRemembered(ctx context.Context, layer digest.Digest, files []regularFile, todo []regularFile) ([]regularFile, error) {
	less := func(f regularFile, o index.ContentObject) bool {
		return f.off < o.Offset || f.off == o.Offset && f.meta < o.Meta
	}
	k := 0
	err := c.m.store.ContentObjects(ctx, layer, func(o index.ContentObject) error {
		for k < len(files) && less(files[k], o) {
			todo = append(todo, files[k])
			k++
		}
		for ; k < len(files) && files[k].off == o.Offset && files[k].meta == o.Meta; k++ {
			sum := libostree.Checksum(o.ID)
			have, err := c.m.repo.HasFile(sum)
			if err != nil {
				return err
			}
			if !have {
				todo = append(todo, files[k])
				continue
			}
			c.sums[files[k].ino] = sum
			c.filesDone.Add(1)
			c.bytesDone.Add(files[k].size)
			c.stats.reused++
		}
		if k == len(files) {
			return errStopScan
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, fmt.Errorf("layer %s: reading remembered content objects: %w", layer, err)
	}
	return append(todo, files[k:]...), nil
}

// errStopScan ends a scan of remembered objects once every file is matched.
var errStopScan = errors.New("all files matched")

// report publishes progress at most every quarter second.
func (c *imageCommit) report(final bool) {
	now := time.Now().UnixNano()
	last := c.lastReport.Load()
	if !final && (now-last < int64(250*time.Millisecond) || !c.lastReport.CompareAndSwap(last, now)) {
		return
	}
	c.lastReport.Store(now)
	c.m.status.SetMaterialization(c.image, c.progress(index.MaterialRunning))
}

// writeDir adds directory ino, at path p, and everything below it to tree.
func (c *imageCommit) writeDir(ctx context.Context, ino index.Ino, p string, tree *libostree.Tree) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, _ := c.view.Stat(ino)
	meta, err := c.dirMetaOf(&in)
	if err != nil {
		return fmt.Errorf("directory %s: %w", p, err)
	}
	tree.SetMeta(meta)
	for i := range c.view.DirLen(ino) {
		e := c.view.DirEntry(ino, i)
		child := p + e.Name
		in, _ := c.view.Stat(e.Ino)
		if !utf8.ValidString(e.Name) || (in.Type == index.TypeSymlink && !utf8.ValidString(in.Linkname)) {
			// OSTree keeps names and link targets as GVariant strings,
			// which must be UTF-8; tar names need not be.
			c.skip(child)
			continue
		}
		switch in.Type {
		case index.TypeDir:
			sub, err := tree.Dir(e.Name)
			if err != nil {
				return fmt.Errorf("directory %s: %w", child, err)
			}
			if err := c.writeDir(ctx, e.Ino, child+"/", sub); err != nil {
				return err
			}
		case index.TypeRegular:
			if err := tree.SetFile(e.Name, c.sums[e.Ino]); err != nil {
				return fmt.Errorf("file %s: %w", child, err)
			}
		case index.TypeSymlink:
			sum, err := c.txn.WriteSymlink(fileMeta(&in, syscall.S_IFLNK), in.Linkname)
			if err == nil {
				err = tree.SetFile(e.Name, sum)
			}
			if err != nil {
				return fmt.Errorf("symlink %s: %w", child, err)
			}
		default:
			// Device nodes, fifos and sockets: OSTree refuses them.
			c.skip(child)
		}
	}
	return nil
}

// skip records an entry OSTree cannot hold. A path that is not UTF-8 is
// listed quoted, Go-style, since metadata strings must be UTF-8.
func (c *imageCommit) skip(p string) {
	c.nSkip++
	if len(c.skipped) >= maxSkippedListed {
		return
	}
	if !utf8.ValidString(p) {
		p = strconv.Quote(p)
	}
	c.skipped = append(c.skipped, p)
}

// dirMetaOf writes a directory's metadata object once per distinct
// owner, mode and xattrs in the image.
func (c *imageCommit) dirMetaOf(in *index.Inode) (libostree.Checksum, error) {
	key := fmt.Sprintf("%d:%d:%o:%x", in.UID, in.GID, in.Mode, metaFingerprint(in))
	if sum, ok := c.dirMeta[key]; ok {
		return sum, nil
	}
	sum, err := c.txn.WriteDirMeta(fileMeta(in, syscall.S_IFDIR))
	if err == nil {
		c.dirMeta[key] = sum
	}
	return sum, err
}

func (c *imageCommit) metadata() libostree.Metadata {
	meta := libostree.Metadata{MetaImage: c.image.String()}
	if info, ok := c.m.status.Image(c.image); ok {
		if info.Manifest != "" {
			meta[MetaManifest] = info.Manifest.String()
		}
		if info.Config != "" {
			meta[MetaConfig] = info.Config.String()
		}
	}
	c.m.mu.Lock()
	meta[MetaTags] = sortedTags(c.m.streams, c.image)
	c.m.mu.Unlock()
	var layers []string
	for _, l := range c.view.Layers() {
		layers = append(layers, l.String())
	}
	meta[MetaLayers] = layers
	meta[MetaSkipped] = c.skipped
	meta[MetaSkippedCount] = fmt.Sprint(c.nSkip)
	return meta
}

// fileMeta is what OSTree records of an inode besides its bytes.
func fileMeta(in *index.Inode, typ uint32) libostree.FileMeta {
	meta := libostree.FileMeta{UID: in.UID, GID: in.GID, Mode: typ | in.Mode&0o7777}
	for _, x := range in.Xattrs {
		meta.Xattrs = append(meta.Xattrs, libostree.Xattr{Name: x.Name, Value: x.Value})
	}
	return meta
}

// metaFingerprint identifies the metadata an object is written with, so
// that a remembered object is reused only for the same owner, mode and
// xattrs.
func metaFingerprint(in *index.Inode) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d:%d:%o:%d\x00", in.UID, in.GID, in.Mode&0o7777, len(in.Xattrs))
	xs := slices.Clone(in.Xattrs)
	slices.SortFunc(xs, func(a, b index.Xattr) int { return cmp.Compare(a.Name, b.Name) })
	for _, x := range xs {
		fmt.Fprintf(h, "%s\x00%d\x00", x.Name, len(x.Value))
		h.Write(x.Value)
	}
	return h.Sum64()
}
