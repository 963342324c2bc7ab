package libostree

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needOstreeCLI(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ostree"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("ostree CLI missing: %v (apt-get install ostree)", err)
		}
		t.Skip("ostree CLI missing; apt-get install ostree")
	}
}

func newRepo(t *testing.T) *Repo {
	t.Helper()
	mode := Bare
	if os.Geteuid() != 0 {
		mode = BareUser
	}
	r, err := Create(filepath.Join(t.TempDir(), "repo"), mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func ostreeCLI(t *testing.T, repo string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ostree", append([]string{"--repo=" + repo}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ostree %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// sample is a small tree with every kind of file OSTree holds.
type sampleFile struct {
	path   string
	meta   FileMeta
	data   []byte
	target string
}

func sampleTree() (dirs []sampleFile, files []sampleFile) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7) // streamed in chunks
	dirs = []sampleFile{
		{path: "", meta: FileMeta{Mode: syscall.S_IFDIR | 0o755}},
		{path: "etc", meta: FileMeta{Mode: syscall.S_IFDIR | 0o750, UID: 1000, GID: 1001}},
		{path: "tmp", meta: FileMeta{Mode: syscall.S_IFDIR | 0o1777}},
	}
	files = []sampleFile{
		{path: "etc/passwd", meta: FileMeta{Mode: syscall.S_IFREG | 0o644}, data: []byte("root:x:0:0::/root:/bin/sh\n")},
		{path: "empty", meta: FileMeta{Mode: syscall.S_IFREG | 0o600, UID: 7, GID: 8}},
		{path: "big", meta: FileMeta{Mode: syscall.S_IFREG | 0o644}, data: big},
		{path: "su", meta: FileMeta{Mode: syscall.S_IFREG | 0o4755}, data: []byte("#!/bin/sh\n")},
		{path: "ping", meta: FileMeta{Mode: syscall.S_IFREG | 0o755, Xattrs: []Xattr{
			{Name: "user.note", Value: []byte("hello")},
			{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		}}, data: []byte("ping binary")},
		{path: "link", meta: FileMeta{Mode: syscall.S_IFLNK | 0o777}, target: "etc/passwd"},
	}
	return dirs, files
}

// commitSample commits the sample tree through the binding.
func commitSample(t *testing.T, r *Repo, ref string) Checksum {
	t.Helper()
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	root := NewTree()
	defer root.Free()
	dirs, files := sampleTree()
	trees := map[string]*Tree{"": root}
	for _, d := range dirs {
		tree := root
		if d.path != "" {
			if tree, err = root.Dir(d.path); err != nil {
				t.Fatal(err)
			}
			trees[d.path] = tree
		}
		sum, err := txn.WriteDirMeta(d.meta)
		if err != nil {
			t.Fatal(err)
		}
		tree.SetMeta(sum)
	}
	for _, f := range files {
		var sum Checksum
		if f.meta.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			sum, err = txn.WriteSymlink(f.meta, f.target)
		} else {
			sum, err = txn.WriteFile(f.meta, int64(len(f.data)), bytes.NewReader(f.data))
		}
		if err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		dir, name := filepath.Split(f.path)
		if err := trees[strings.TrimSuffix(dir, "/")].SetFile(name, sum); err != nil {
			t.Fatal(err)
		}
	}
	commit, err := txn.CommitTree(root, "sample", Metadata{"explodefs.source": "ns/stream:tag", "explodefs.skipped": []string{"/dev/null", "/run/fifo"}}, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.SetRef(ref, commit); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	return commit
}

// TestCommitEqualsDirectoryCommit writes the sample tree through the
// binding and, as files on disk, through `ostree commit --tree=dir`: the two
// commits must hold the same objects, entry by entry.
func TestCommitEqualsDirectoryCommit(t *testing.T) {
	needOstreeCLI(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files owners and security xattrs on disk")
	}
	r := newRepo(t)
	commitSample(t, r, "test/ours")

	dir := t.TempDir()
	dirs, files := sampleTree()
	for _, d := range dirs {
		p := filepath.Join(dir, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		var err error
		if f.target != "" {
			err = os.Symlink(f.target, p)
		} else {
			err = os.WriteFile(p, f.data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		setMeta(t, p, f.meta)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		setMeta(t, filepath.Join(dir, dirs[i].path), dirs[i].meta)
	}
	ostreeCLI(t, r.Path(), "commit", "--branch=test/cli", "--tree=dir="+dir, "--subject=cli")

	ours := ostreeCLI(t, r.Path(), "ls", "-R", "-X", "-C", "test/ours")
	cli := ostreeCLI(t, r.Path(), "ls", "-R", "-X", "-C", "test/cli")
	if ours != cli {
		t.Errorf("trees differ\nours:\n%s\nostree commit --tree=dir:\n%s", ours, cli)
	}
	ostreeCLI(t, r.Path(), "fsck")
}

func setMeta(t *testing.T, p string, m FileMeta) {
	t.Helper()
	if err := os.Lchown(p, int(m.UID), int(m.GID)); err != nil {
		t.Fatal(err)
	}
	if m.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		// chmod after chown: chown clears setuid.
		if err := unix.Chmod(p, m.Mode&0o7777); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range m.Xattrs {
		if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCommitMetadataAndRefs(t *testing.T) {
	r := newRepo(t)
	commit := commitSample(t, r, "explodefs/images/sha256/aa")
	got, ok, err := r.Resolve("explodefs/images/sha256/aa")
	if err != nil || !ok || got != commit {
		t.Fatalf("Resolve = %s %v %v, want %s", got, ok, err, commit)
	}
	if _, ok, err := r.Resolve("explodefs/images/sha256/bb"); err != nil || ok {
		t.Fatalf("Resolve of a missing ref = %v %v", ok, err)
	}
	v, ok, err := r.CommitMetadata(commit, "explodefs.skipped")
	if err != nil || !ok || v != "/dev/null\n/run/fifo" {
		t.Fatalf("skipped metadata = %q %v %v", v, ok, err)
	}
	if _, ok, err := r.CommitMetadata(commit, "nope"); err != nil || ok {
		t.Fatalf("missing metadata key = %v %v", ok, err)
	}
	for _, ref := range []string{"explodefs/tags/ns/s/latest", "explodefs/tags/ns/s/v1", "other/x"} {
		if err := r.SetRef(ref, commit); err != nil {
			t.Fatal(err)
		}
	}
	refs, err := r.ListRefs("explodefs/tags")
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 || refs["explodefs/tags/ns/s/latest"] != commit || refs["explodefs/tags/ns/s/v1"] != commit {
		t.Fatalf("ListRefs(explodefs/tags) = %v", refs)
	}
	if refs, err := r.ListRefs("explodefs/none"); err != nil || len(refs) != 0 {
		t.Fatalf("ListRefs of an absent prefix = %v %v", refs, err)
	}
	if err := r.DeleteRef("explodefs/tags/ns/s/v1"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteRef("explodefs/tags/ns/s/v1"); err != nil {
		t.Fatalf("deleting a missing ref: %v", err)
	}
	if refs, _ := r.ListRefs(""); len(refs) != 3 {
		t.Fatalf("all refs after delete = %v", refs)
	}
}

func TestPruneKeepsReachableAndRemovesTheRest(t *testing.T) {
	needOstreeCLI(t)
	r := newRepo(t)
	commit := commitSample(t, r, "keep")
	// A second commit whose only unique object is one file.
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	root := NewTree()
	defer root.Free()
	meta, _ := txn.WriteDirMeta(FileMeta{Mode: syscall.S_IFDIR | 0o755})
	root.SetMeta(meta)
	only, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG | 0o644}, 5, strings.NewReader("only!"))
	if err != nil {
		t.Fatal(err)
	}
	root.SetFile("only", only)
	second, err := txn.CommitTree(root, "drop me", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	txn.SetRef("drop", second)
	if _, err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	if have, _ := r.HasFile(only); !have {
		t.Fatal("object missing after commit")
	}
	if _, err := r.Prune(); err != nil {
		t.Fatal(err)
	}
	if have, _ := r.HasFile(only); !have {
		t.Fatal("prune removed an object a ref reaches")
	}
	// A dry run for dropping the ref counts what the prune then deletes,
	// and deletes nothing.
	estimate, err := r.PruneEstimate([]string{"keep"})
	if err != nil {
		t.Fatal(err)
	}
	if have, _ := r.HasFile(only); !have {
		t.Fatal("a prune estimate removed an object")
	}
	if none, err := r.PruneEstimate([]string{"keep", "drop"}); err != nil || none.Pruned != 0 {
		t.Errorf("an estimate keeping every ref would prune %d objects (%v)", none.Pruned, err)
	}
	if err := r.DeleteRef("drop"); err != nil {
		t.Fatal(err)
	}
	st, err := r.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if estimate.Pruned != st.Pruned || estimate.Bytes != st.Bytes || estimate.Bytes == 0 {
		t.Errorf("estimated %d objects (%d bytes), pruned %d (%d bytes)", estimate.Pruned, estimate.Bytes, st.Pruned, st.Bytes)
	}
	if st.Pruned < 2 { // the file and the commit at least
		t.Errorf("prune removed %d objects, want the dropped commit's", st.Pruned)
	}
	if have, _ := r.HasFile(only); have {
		t.Error("prune kept an object no ref reaches")
	}
	if got, ok, _ := r.Resolve("keep"); !ok || got != commit {
		t.Fatal("kept ref lost")
	}
	ostreeCLI(t, r.Path(), "fsck")
}

func TestAbortLeavesNoRef(t *testing.T) {
	r := newRepo(t)
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Begin(); err == nil {
		t.Fatal("second Begin on one repo succeeded")
	}
	sum, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG | 0o644}, 4, strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	root := NewTree()
	defer root.Free()
	meta, _ := txn.WriteDirMeta(FileMeta{Mode: syscall.S_IFDIR | 0o755})
	root.SetMeta(meta)
	root.SetFile("f", sum)
	commit, err := txn.CommitTree(root, "aborted", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	txn.SetRef("aborted", commit)
	if err := txn.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.Resolve("aborted"); ok {
		t.Fatal("aborted transaction left its ref")
	}
	if _, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG}, 0, strings.NewReader("")); err != ErrTxnDone {
		t.Fatalf("write after abort: %v", err)
	}
	// The repo takes a new transaction.
	txn2, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	txn2.Abort()
}

func TestWriteFileShortSource(t *testing.T) {
	r := newRepo(t)
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	for _, size := range []int64{10, 5 << 20} {
		_, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG | 0o644}, size, strings.NewReader("short"))
		if err == nil {
			t.Errorf("size %d from a 5-byte source: no error", size)
		}
	}
	// The transaction is still usable.
	if _, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG | 0o644}, 5, strings.NewReader("short")); err != nil {
		t.Fatal(err)
	}
}

func TestFsckFileDetectsDamage(t *testing.T) {
	r := newRepo(t)
	commitSample(t, r, "x")
	data := []byte("root:x:0:0::/root:/bin/sh\n")
	txn, _ := r.Begin()
	sum, err := txn.WriteFile(FileMeta{Mode: syscall.S_IFREG | 0o644}, int64(len(data)), bytes.NewReader(data))
	txn.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.FsckFile(sum); err != nil {
		t.Fatalf("intact object: %v", err)
	}
	got, err := os.ReadFile(r.ObjectPath(sum))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ObjectPath holds %q, %v", got, err)
	}
	p := r.ObjectPath(sum)
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, []byte("root:x:0:0::/root:/bin/XX\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o644)
	if err := r.FsckFile(sum); err == nil {
		t.Fatal("damaged object passed fsck")
	}
}

func TestClosedRepo(t *testing.T) {
	r := newRepo(t)
	r.Close()
	if _, err := r.ListRefs(""); err == nil {
		t.Fatal("call on a closed repo succeeded")
	}
	r.Close()
}

func TestOpenRefusesArchiveRepo(t *testing.T) {
	needOstreeCLI(t)
	dir := filepath.Join(t.TempDir(), "archive")
	cmd := exec.Command("ostree", "--repo="+dir, "init", "--mode=archive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "archive") {
		t.Fatalf("Open of an archive repo: %v", err)
	}
}

// TestConcurrentWrites writes the same files from several goroutines at
// once through writer threads and one at a time: the checksums agree, and
// the commit of the concurrent writes is complete.
func TestConcurrentWrites(t *testing.T) {
	needOstreeCLI(t)
	dir := t.TempDir()
	mode := Bare
	if os.Geteuid() != 0 {
		mode = BareUser
	}
	r, err := Create(filepath.Join(dir, "repo"), mode, Writers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var files [][]byte
	for i := range 60 {
		size := 100 + i*997
		if i%10 == 0 {
			size = inlineMax + chunkSize + i // streamed
		}
		files = append(files, bytes.Repeat([]byte{byte(i)}, size))
	}
	meta := FileMeta{Mode: syscall.S_IFREG | 0o644, Xattrs: []Xattr{{Name: "user.x", Value: []byte("y")}}}
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	serial := make([]Checksum, len(files))
	for i, f := range files {
		if serial[i], err = txn.WriteFile(meta, int64(len(f)), bytes.NewReader(f)); err != nil {
			t.Fatal(err)
		}
	}
	concurrent := make([]Checksum, len(files))
	errs := make(chan error, len(files))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(files); i += 4 {
				sum, err := txn.WriteFile(meta, int64(len(files[i])), bytes.NewReader(files[i]))
				concurrent[i] = sum
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(serial, concurrent) {
		t.Fatal("concurrent writes gave other checksums")
	}
	root := NewTree()
	defer root.Free()
	dm, _ := txn.WriteDirMeta(FileMeta{Mode: syscall.S_IFDIR | 0o755})
	root.SetMeta(dm)
	for i, sum := range concurrent {
		root.SetFile(fmt.Sprintf("f%02d", i), sum)
	}
	commit, err := txn.CommitTree(root, "concurrent", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	txn.SetRef("concurrent", commit)
	if _, err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	for i := range files {
		got, err := os.ReadFile(r.ObjectPath(concurrent[i]))
		if err != nil || !bytes.Equal(got, files[i]) {
			t.Fatalf("object of file %d: %d bytes, %v", i, len(got), err)
		}
	}
	ostreeCLI(t, r.Path(), "fsck")
}

// The Repo's main and writer threads run at the niceness asked for, and
// nothing else does.
func TestNiceThreads(t *testing.T) {
	r, err := Create(filepath.Join(t.TempDir(), "repo"), BareUser, Writers(2), Nice(7))
	if err != nil {
		t.Fatal(err)
	}
	niced := func() int {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, task := range tasks {
			raw, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
			if err != nil {
				continue
			}
			// Fields after the command name, which ends with ')':
			// state is the first, nice the 17th.
			fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
			if len(fields) > 16 && fields[16] == "7" {
				n++
			}
		}
		return n
	}
	if got := niced(); got != 3 {
		t.Errorf("%d threads at niceness 7, want the main thread and 2 writers", got)
	}
	r.Close()
	deadline := time.Now().Add(5 * time.Second)
	for niced() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := niced(); got != 0 {
		t.Errorf("%d threads still at niceness 7 after Close", got)
	}
}

// A batch gives each file the object a write of its own gives, and names
// the file that failed.
func TestWriteBatchEqualsSingleWrites(t *testing.T) {
	t.Run("default", func(t *testing.T) { testWriteBatch(t, newRepo(t)) })
	// As root the default is the stage; libostree's path, which a
	// bare-user repository takes, is tested too.
	t.Run("libostree", func(t *testing.T) {
		mode := Bare
		if os.Geteuid() != 0 {
			mode = BareUser
		}
		r, err := Create(filepath.Join(t.TempDir(), "repo"), mode, forceLibostreeWrites)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		testWriteBatch(t, r)
	})
}

func testWriteBatch(t *testing.T, r *Repo) {
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	capability := Xattr{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	contents := []string{"first", "", "third file", "first"}
	metas := []FileMeta{
		{UID: 0, GID: 0, Mode: syscall.S_IFREG | 0o644},
		{UID: 1000, GID: 100, Mode: syscall.S_IFREG | 0o600},
		{UID: 0, GID: 0, Mode: syscall.S_IFREG | 0o4755, Xattrs: []Xattr{capability, {Name: "user.a", Value: []byte("b")}}},
		{UID: 0, GID: 0, Mode: syscall.S_IFREG | 0o755},
	}
	var buf []byte
	var files []BatchFile
	for i, s := range contents {
		files = append(files, BatchFile{Meta: metas[i], Off: len(buf), Len: len(s)})
		buf = append(buf, s...)
	}
	objs := make([]Object, len(files))
	err = txn.OnWriter(func(w *Writer) error {
		n, err := w.WriteBatch(buf, files, objs)
		if err != nil || n != len(files) {
			t.Errorf("wrote %d of %d: %v", n, len(files), err)
		}
		for i, s := range contents {
			if !objs[i].Written {
				t.Errorf("file %d: the batch found its object in an empty repo", i)
			}
			single, err := w.WriteBytes(metas[i], []byte(s))
			if err != nil {
				return err
			}
			if single.Sum != objs[i].Sum {
				t.Errorf("file %d: batch object %s, single write %s", i, objs[i].Sum, single.Sum)
			}
			if single.Written {
				t.Errorf("file %d: written again", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if objs[0].Sum == objs[3].Sum {
		t.Error("files with equal bytes and other modes got one object")
	}
	// A file OSTree refuses stops the batch there.
	bad := append(slices.Clone(files[:2]), BatchFile{Meta: FileMeta{Mode: syscall.S_IFIFO | 0o644}}, files[2])
	err = txn.OnWriter(func(w *Writer) error {
		n, err := w.WriteBatch(buf, bad, make([]Object, len(bad)))
		if n != 2 || err == nil {
			t.Errorf("a batch with a fifo in third place wrote %d, err %v", n, err)
		}
		if _, err := w.WriteBatch(buf, []BatchFile{{Off: len(buf) - 1, Len: 2}}, make([]Object, 1)); err == nil {
			t.Error("a file past the batch's buffer was written")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
