package ostree

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// layerFile is one tar entry of a test layer.
type layerFile struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
	xattrs           map[string]string
}

func gzipLayer(t *testing.T, files []layerFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, Uid: f.uid, Linkname: f.link,
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if f.typ == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if len(f.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range f.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// countingReader counts the bytes read per layer.
type countingReader struct {
	*index.Reader
	mu    sync.Mutex
	bytes map[digest.Digest]int64
}

func (c *countingReader) ReadAt(ctx context.Context, layer digest.Digest, p []byte, off int64) (int, error) {
	n, err := c.Reader.ReadAt(ctx, layer, p, off)
	c.mu.Lock()
	c.bytes[layer] += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) read(layer digest.Digest) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes[layer]
}

type fakeWants struct {
	mu     sync.Mutex
	images map[digest.Digest]bool
	tags   map[string]bool
}

func (w *fakeWants) Ready() bool { return true }
func (w *fakeWants) WantsImage(d digest.Digest) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.images[d]
}
func (w *fakeWants) WantsTag(ns, stream, tag string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tags[ns+"/"+stream+"/"+tag]
}

type fixture struct {
	t      *testing.T
	store  index.Store
	blobs  indextest.MemBlobs
	reader *countingReader
	reg    *status.Registry
	m      *Materializer
	wants  *fakeWants
	cancel context.CancelFunc
	done   chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, Options{})
}

// newFixtureWith runs a materializer with opts, its repository, pruning
// and logger set by the fixture.
func newFixtureWith(t *testing.T, opts Options) *fixture {
	t.Helper()
	if _, err := exec.LookPath("ostree"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ostree CLI missing: %v", err)
		}
		t.Skip("ostree CLI missing; apt-get install ostree")
	}
	f := &fixture{t: t, store: memstore.New(), blobs: indextest.MemBlobs{}, reg: status.NewRegistry(),
		wants: &fakeWants{images: map[digest.Digest]bool{}, tags: map[string]bool{}}}
	f.reader = &countingReader{Reader: index.NewReader(f.store, f.blobs, index.ReaderOptions{}), bytes: map[digest.Digest]int64{}}
	t.Cleanup(func() { f.reader.Close() })
	opts.RepoPath, opts.Logger = filepath.Join(t.TempDir(), "repo"), slog.New(slog.DiscardHandler)
	m, err := New(f.store, f.reader, f.reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.SetWants(f.wants)
	f.m = m
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() { defer close(f.done); m.Run(ctx) }()
	t.Cleanup(func() { f.stop(); m.Close() })
	return f
}

func (f *fixture) stop() {
	f.cancel()
	<-f.done
}

func (f *fixture) layer(files []layerFile) digest.Digest {
	blob := gzipLayer(f.t, files)
	d := digest.FromBytes(blob)
	f.blobs[d] = blob
	if _, err := index.IndexLayer(context.Background(), f.store, indextest.MemBlob(blob), d, index.PassOptions{}); err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) image(name string, layers ...digest.Digest) (digest.Digest, *index.View) {
	v, err := index.BuildView(context.Background(), f.store, layers)
	if err != nil {
		f.t.Fatal(err)
	}
	d := digest.FromString(name)
	f.reg.UpdateImage(d, func(s *status.Image) {
		s.State, s.Manifest, s.Config = status.Ready, d, digest.FromString(name+" config")
	})
	return d, v
}

func (f *fixture) waitDone(d digest.Digest) libostree.Checksum {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		f.m.mu.Lock()
		img, ok := f.m.images[d]
		var st index.MaterialState
		var commit libostree.Checksum
		var reason string
		if ok {
			st, commit, reason = img.state, img.commit, img.reason
		}
		f.m.mu.Unlock()
		switch st {
		case index.MaterialDone:
			return commit
		case index.MaterialFailed:
			f.t.Fatalf("image %s failed: %s", d, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("image %s not materialized in time", d)
	return libostree.Checksum{}
}

func (f *fixture) ostree(args ...string) string {
	f.t.Helper()
	out, err := exec.Command("ostree", append([]string{"--repo=" + f.m.repo.Path()}, args...)...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("ostree %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (f *fixture) resolve(ref string) (libostree.Checksum, bool) {
	f.t.Helper()
	c, ok, err := f.m.repo.Resolve(ref)
	if err != nil {
		f.t.Fatal(err)
	}
	return c, ok
}

var baseFiles = []layerFile{
	{name: "etc/", typ: tar.TypeDir, mode: 0o755},
	{name: "etc/os-release", typ: tar.TypeReg, mode: 0o644, body: "ID=test\n"},
	{name: "bin/", typ: tar.TypeDir, mode: 0o755},
	{name: "bin/sh", typ: tar.TypeReg, mode: 0o4755, body: strings.Repeat("shell", 100000)},
	{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, body: "ping", xattrs: map[string]string{"user.a": "1"}},
	{name: "bin/link", typ: tar.TypeSymlink, link: "sh", mode: 0o777},
	{name: "bin/hard", typ: tar.TypeLink, link: "bin/ping"},
	{name: "dev/", typ: tar.TypeDir, mode: 0o755},
	{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
	{name: "run/", typ: tar.TypeDir, mode: 0o755},
	{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
	{name: "home/", typ: tar.TypeDir, mode: 0o700, uid: 1000},
}

func TestMaterializeRefsMetadataAndReuse(t *testing.T) {
	f := newFixture(t)
	base := f.layer(baseFiles)
	topA := f.layer([]layerFile{{name: "etc/a", typ: tar.TypeReg, mode: 0o600, body: "image a"}, {name: "etc/.wh.os-release", typ: tar.TypeReg}})
	topB := f.layer([]layerFile{{name: "etc/b", typ: tar.TypeReg, mode: 0o600, body: strings.Repeat("image b", 1000)}})
	a, viewA := f.image("a", base, topA)
	b, viewB := f.image("b", base, topB)

	f.wants.images[a], f.wants.tags["ns/s/latest"] = true, true
	f.m.SetStream("ns", "s", map[string]digest.Digest{"latest": a}, map[digest.Digest]*index.View{a: viewA})
	commitA := f.waitDone(a)
	if got, ok := f.resolve(ImageRef(a)); !ok || got != commitA {
		t.Fatalf("image ref = %s %v, want %s", got, ok, commitA)
	}
	waitRef(t, f, TagRef("ns", "s", "latest"), commitA)

	ls := f.ostree("ls", "-R", ImageRef(a))
	for _, want := range []string{"/bin/sh", "/bin/link -> sh", "/etc/a", "/home"} {
		if !strings.Contains(ls, want) {
			t.Errorf("commit lacks %s:\n%s", want, ls)
		}
	}
	for _, gone := range []string{"os-release", ".wh.", "/dev/null", "fifo"} {
		if strings.Contains(ls, gone) {
			t.Errorf("commit holds %s:\n%s", gone, ls)
		}
	}
	meta := map[string]string{
		MetaManifest: a.String(), MetaConfig: digest.FromString("a config").String(), MetaTags: "ns/s:latest",
		MetaSkipped: "/dev/null\n/run/fifo", MetaSkippedCount: "2", MetaLayers: base.String() + "\n" + topA.String(),
	}
	for k, want := range meta {
		got, ok, err := f.m.repo.CommitMetadata(commitA, k)
		if err != nil || !ok || got != want {
			t.Errorf("metadata %s = %q %v %v, want %q", k, got, ok, err, want)
		}
	}
	f.ostree("fsck")

	// B shares the base layer: of it, only the file A whited out is read.
	baseRead := f.reader.read(base)
	f.wants.images[b] = true
	f.m.SetStream("ns", "s", map[string]digest.Digest{"latest": b}, map[digest.Digest]*index.View{a: viewA, b: viewB})
	commitB := f.waitDone(b)
	if got := f.reader.read(base) - baseRead; got != int64(len("ID=test\n")) {
		t.Errorf("second image read %d bytes of the shared base layer, want only /etc/os-release's 8", got)
	}
	if f.reader.read(topB) < 7000 {
		t.Errorf("second image read %d bytes of its own layer", f.reader.read(topB))
	}
	waitRef(t, f, TagRef("ns", "s", "latest"), commitB)
	if got := f.ostree("cat", ImageRef(b), "/bin/sh"); got != strings.Repeat("shell", 100000) {
		t.Errorf("/bin/sh of b holds %d bytes", len(got))
	}

	// Passthrough backing: the object holds the file's bytes.
	ino, ok := viewB.LookupPath("etc/b")
	if !ok {
		t.Fatal("no etc/b")
	}
	file, err := f.m.Backing(context.Background(), b, viewB, ino)
	if err != nil || file == nil {
		t.Fatalf("Backing = %v, %v", file, err)
	}
	got, _ := io.ReadAll(file)
	file.Close()
	if string(got) != strings.Repeat("image b", 1000) {
		t.Errorf("backing file holds %q", got)
	}

	// A leaves every stream: its refs go, and prune removes its own objects.
	objA, err := f.store.ContentObject(context.Background(), topA, offsetOf(t, viewA, "etc/a"), metaOf(t, viewA, "etc/a"))
	if err != nil {
		t.Fatal(err)
	}
	f.wants.mu.Lock()
	delete(f.wants.images, a)
	f.wants.mu.Unlock()
	f.m.SetStream("ns", "s", map[string]digest.Digest{"latest": b}, map[digest.Digest]*index.View{b: viewB})
	dry, err := f.m.GC(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if have, _ := f.m.repo.HasFile(libostree.Checksum(objA)); !have || dry.Pruned == 0 || dry.Records != 1 {
		t.Errorf("dry run = %+v, object kept %v; want objects and one record counted, nothing deleted", dry, have)
	}
	if _, err := f.store.Materialization(context.Background(), a); err != nil {
		t.Errorf("a dry run deleted the record: %v", err)
	}
	st, err := f.m.GC(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pruned != dry.Pruned || st.Bytes != dry.Bytes {
		t.Errorf("pruned %d objects (%d bytes), the dry run said %d (%d bytes)", st.Pruned, st.Bytes, dry.Pruned, dry.Bytes)
	}
	if _, ok := f.resolve(ImageRef(a)); ok {
		t.Error("ref of a removed image kept")
	}
	if st.Pruned == 0 || st.Records != 1 {
		t.Errorf("GC = %+v, want objects pruned and one record deleted", st)
	}
	if have, _ := f.m.repo.HasFile(libostree.Checksum(objA)); have {
		t.Error("object only the removed image held was kept")
	}
	if have, _ := f.m.repo.HasFile(commitFile(t, f, b, "/bin/sh")); !have {
		t.Error("object of the kept image pruned")
	}
	f.ostree("fsck")
}

func waitRef(t *testing.T, f *fixture, ref string, want libostree.Checksum) {
	t.Helper()
	for range 500 {
		if got, ok := f.resolve(ref); ok && got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, ok := f.resolve(ref)
	t.Fatalf("ref %s = %s %v, want %s", ref, got, ok, want)
}

func offsetOf(t *testing.T, v *index.View, p string) int64 {
	ino, ok := v.LookupPath(p)
	if !ok {
		t.Fatalf("no %s", p)
	}
	in, _ := v.Stat(ino)
	return in.Offset
}

func metaOf(t *testing.T, v *index.View, p string) uint64 {
	ino, _ := v.LookupPath(p)
	in, _ := v.Stat(ino)
	return metaFingerprint(&in)
}

func commitFile(t *testing.T, f *fixture, image digest.Digest, p string) libostree.Checksum {
	out := f.ostree("ls", "-C", ImageRef(image), p)
	fields := strings.Fields(out)
	c, err := libostree.ParseChecksum(fields[4])
	if err != nil {
		t.Fatalf("ls -C %s: %q: %v", p, out, err)
	}
	return c
}

// Names and link targets that are not UTF-8 are legal in tar but not in
// OSTree's trees: they are skipped and listed, and the rest is committed.
func TestMaterializeSkipsNamesOSTreeCannotHold(t *testing.T) {
	f := newFixture(t)
	layer := f.layer([]layerFile{
		{name: "ok.txt", typ: tar.TypeReg, mode: 0o644, body: "fine"},
		{name: "caf\xe9.txt", typ: tar.TypeReg, mode: 0o644, body: "latin-1 name"},
		{name: "dir\xff/", typ: tar.TypeDir, mode: 0o755},
		{name: "dir\xff/inner", typ: tar.TypeReg, mode: 0o644, body: "below a bad name"},
		{name: "link", typ: tar.TypeSymlink, link: "target\xfe", mode: 0o777},
	})
	d, view := f.image("latin1", layer)
	f.wants.images[d] = true
	f.m.SetStream("ns", "l1", map[string]digest.Digest{"latest": d}, map[digest.Digest]*index.View{d: view})
	commit := f.waitDone(d)
	ls := f.ostree("ls", "-R", ImageRef(d))
	if !strings.Contains(ls, "/ok.txt") || strings.Count(ls, "\n") != 2 {
		t.Errorf("commit should hold / and /ok.txt only:\n%s", ls)
	}
	got, _, err := f.m.repo.CommitMetadata(commit, MetaSkipped)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{`"/caf\xe9.txt"`, `"/dir\xff"`, "/link"}, "\n")
	if got != want {
		t.Errorf("skipped = %q, want %q", got, want)
	}
	f.ostree("fsck")
}

// Many large files in one image, each read by the writer that writes it.
func TestMaterializeManyLargeFiles(t *testing.T) {
	f := newFixture(t)
	var files []layerFile
	for i := range 20 {
		body := strings.Repeat(fmt.Sprintf("large file %d\n", i), (smallFile+1<<20)/14)
		files = append(files, layerFile{name: fmt.Sprintf("large-%02d", i), typ: tar.TypeReg, mode: 0o644, body: body})
	}
	d, view := f.image("large", f.layer(files))
	f.wants.images[d] = true
	f.m.SetStream("ns", "large", map[string]digest.Digest{"latest": d}, map[digest.Digest]*index.View{d: view})
	f.waitDone(d)
	for _, lf := range files[:3] {
		if got := f.ostree("cat", ImageRef(d), "/"+lf.name); got != lf.body {
			t.Errorf("%s: %d bytes, want %d", lf.name, len(got), len(lf.body))
		}
	}
}

// Identical small files of an image (same bytes, same metadata) are
// written once; libostree would otherwise pay a temporary file for each.
func TestMaterializeWritesIdenticalFilesOnce(t *testing.T) {
	f := newFixture(t)
	var files []layerFile
	for i := range 30 {
		files = append(files, layerFile{name: fmt.Sprintf("empty-%02d", i), typ: tar.TypeReg, mode: 0o644})
	}
	for i := range 20 {
		files = append(files, layerFile{name: fmt.Sprintf("hello-%02d", i), typ: tar.TypeReg, mode: 0o644, body: "hello"})
	}
	files = append(files, layerFile{name: "hello-private", typ: tar.TypeReg, mode: 0o600, body: "hello"})
	d, view := f.image("same", f.layer(files))
	commit, c, err := f.m.commitImage(context.Background(), d, view, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Three distinct objects; writers racing on the same bytes may each
	// write it once.
	if c.stats.written+c.stats.same != int64(len(files)) || c.stats.written > int64(3*f.m.opts.Writers) {
		t.Errorf("wrote %d files and found %d the same, want at most %d written of %d",
			c.stats.written, c.stats.same, 3*f.m.opts.Writers, len(files))
	}
	ls := f.ostree("ls", "-R", commit.String())
	if got := strings.Count(ls, "\n"); got != len(files)+1 {
		t.Errorf("commit lists %d entries, want %d:\n%s", got, len(files)+1, ls)
	}
	if got := f.ostree("cat", commit.String(), "/hello-private"); got != "hello" {
		t.Errorf("hello-private holds %q", got)
	}
	if !strings.Contains(ls, "-00600 0 0      5 /hello-private") {
		t.Errorf("hello-private lost its mode:\n%s", ls)
	}
}
