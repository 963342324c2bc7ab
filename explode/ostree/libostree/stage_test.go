package libostree

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needRoot skips (fails in CI) where bare repositories cannot be written.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("bare repositories need root; CI runs as root")
		}
		t.Skip("bare repositories need root; run the tests as root")
	}
}

func createBare(t *testing.T, path string, opts ...Option) *Repo {
	t.Helper()
	r, err := Create(path, Bare, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func forceLibostreeWrites(o *options) { o.libostreeWrites = true }

// stageFiles are files whose headers take every framing the checksum
// knows on disk: no xattrs, small ones, and more than 255 bytes of them.
func stageFiles() []sampleFile {
	capability := Xattr{Name: "security.capability", Value: []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	long := Xattr{Name: "user.long", Value: bytes.Repeat([]byte("x"), 300)}
	var many []Xattr
	for _, name := range []string{"user.c", "user.a", "user.bb", "trusted.t"} {
		many = append(many, Xattr{Name: name, Value: []byte(name + "-value")})
	}
	return []sampleFile{
		{path: "empty", meta: FileMeta{Mode: syscall.S_IFREG | 0o644}},
		{path: "passwd", meta: FileMeta{Mode: syscall.S_IFREG | 0o644}, data: []byte("root:x:0:0::/root:/bin/sh\n")},
		{path: "owned", meta: FileMeta{UID: 4294967294, GID: 65534, Mode: syscall.S_IFREG | 0o640}, data: []byte("nobody's")},
		{path: "setuid", meta: FileMeta{UID: 1000, GID: 1000, Mode: syscall.S_IFREG | 0o6755}, data: []byte("#!/bin/sh\n")},
		{path: "sticky", meta: FileMeta{Mode: syscall.S_IFREG | 0o1600}, data: []byte("t")},
		{path: "ping", meta: FileMeta{Mode: syscall.S_IFREG | 0o755, Xattrs: []Xattr{capability}}, data: []byte("ping")},
		{path: "long-xattr", meta: FileMeta{Mode: syscall.S_IFREG | 0o644, Xattrs: []Xattr{long, capability}}, data: []byte("l")},
		{path: "many-xattrs", meta: FileMeta{Mode: syscall.S_IFREG | 0o600, Xattrs: many}, data: bytes.Repeat([]byte("m"), 300)},
		{path: "big", meta: FileMeta{UID: 5, Mode: syscall.S_IFREG | 0o4711, Xattrs: []Xattr{capability}},
			data: bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7)},
	}
}

// The stage writes the objects libostree writes, byte for byte and
// attribute for attribute, and libostree's fsck accepts them.
func TestStageWritesWhatLibostreeWrites(t *testing.T) {
	needRoot(t)
	needOstreeCLI(t)
	dir := t.TempDir()
	staged := createBare(t, filepath.Join(dir, "staged"))
	plain := createBare(t, filepath.Join(dir, "plain"), forceLibostreeWrites)
	user, err := Create(filepath.Join(dir, "user"), BareUser)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	files := stageFiles()
	sums := map[*Repo][]Checksum{}
	for _, r := range []*Repo{staged, plain, user} {
		txn, err := r.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if (txn.stage != nil) != (r == staged) {
			t.Fatalf("repo %s: stage %v", r.Path(), txn.stage != nil)
		}
		for _, f := range files {
			sum, err := txn.WriteFile(f.meta, int64(len(f.data)), bytes.NewReader(f.data))
			if err != nil {
				t.Fatalf("%s: %v", f.path, err)
			}
			sums[r] = append(sums[r], sum)
		}
		if r == staged {
			// Not in objects/ before the commit.
			if has, err := r.HasFile(sums[r][1]); err != nil || has {
				t.Errorf("a staged object is in objects/ before the commit (%v, %v)", has, err)
			}
		}
		stats, err := txn.Commit()
		if err != nil {
			t.Fatal(err)
		}
		if r == staged && stats.Objects < uint64(len(files)) {
			t.Errorf("repo %s: commit counts %d objects, want at least %d", r.Path(), stats.Objects, len(files))
		}
	}
	if !slices.Equal(sums[user], sums[plain]) {
		t.Errorf("bare-user objects %v, bare %v", sums[user], sums[plain])
	}
	for i, f := range files {
		if sums[staged][i] != sums[plain][i] {
			t.Errorf("%s: staged object %s, libostree's %s", f.path, sums[staged][i], sums[plain][i])
			continue
		}
		if err := staged.FsckFile(sums[staged][i]); err != nil {
			t.Errorf("%s: %v", f.path, err)
		}
		want := describeObject(t, plain.ObjectPath(sums[plain][i]))
		if got := describeObject(t, staged.ObjectPath(sums[staged][i])); got != want {
			t.Errorf("%s: staged object\n%s\nlibostree's\n%s", f.path, got, want)
		}
	}
	ostreeCLI(t, staged.Path(), "fsck", "--all")
	if left, _ := filepath.Glob(filepath.Join(staged.Path(), "tmp", stagePrefix+"*")); len(left) != 0 {
		t.Errorf("stages left after the commit: %v", left)
	}
}

// describeObject says everything OSTree keeps of an object file.
func describeObject(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, names)
	if err != nil {
		t.Fatal(err)
	}
	var xattrs []string
	for _, name := range strings.Split(strings.TrimSuffix(string(names[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		value := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(path, name, value)
		if err != nil {
			t.Fatal(err)
		}
		xattrs = append(xattrs, name+"="+string(value[:m]))
	}
	slices.Sort(xattrs)
	return fmt.Sprintf("st_mode %o, owner %d:%d, size %d, mtime %d, bytes %x, xattrs %q",
		st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, sha256.Sum256(data), xattrs)
}

// A stage goes with its transaction: on Abort, on Close, and, once its
// process is gone, on the next Begin; a stage another transaction holds
// stays.
func TestStageLeavesNothingBehind(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "repo")
	r := createBare(t, path)
	stages := func() []string {
		left, err := filepath.Glob(filepath.Join(path, "tmp", stagePrefix+"*"))
		if err != nil {
			t.Fatal(err)
		}
		return left
	}
	meta := FileMeta{Mode: syscall.S_IFREG | 0o644}

	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := txn.WriteFile(meta, 7, strings.NewReader("aborted"))
	if err != nil {
		t.Fatal(err)
	}
	if len(stages()) != 1 {
		t.Fatalf("stages during a transaction: %v", stages())
	}
	if err := txn.Abort(); err != nil {
		t.Fatal(err)
	}
	if has, _ := r.HasFile(sum); has || len(stages()) != 0 {
		t.Errorf("after Abort: object in objects/ %v, stages %v", has, stages())
	}

	// A crashed writer's stage: no lock on it.
	crashed := filepath.Join(path, "tmp", stagePrefix+"crashed")
	if err := os.MkdirAll(crashed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crashed, sum.String()+".file"), []byte("aborted"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Another repo handle's transaction holds its stage.
	other, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherTxn, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	held := otherTxn.stage.dir
	txn, err = r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) {
		t.Errorf("the crashed stage is still there: %v", err)
	}
	if _, err := os.Stat(held); err != nil {
		t.Errorf("Begin removed a stage another transaction holds: %v", err)
	}
	if _, err := txn.WriteFile(meta, 4, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	other.Close()
	// Close returns before the repo's thread has let go.
	for deadline := time.Now().Add(5 * time.Second); len(stages()) != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if left := stages(); len(left) != 0 {
		t.Errorf("stages after Close: %v", left)
	}
}

// The stage keeps the repository's min-free-space, as libostree's own
// writes do, and says so.
func TestStageKeepsMinFreeSpace(t *testing.T) {
	needRoot(t)
	needOstreeCLI(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	path := filepath.Join(mnt, "repo")
	r := createBare(t, path)
	r.Close()
	ostreeCLI(t, path, "config", "set", "core.min-free-space-size", "20MB")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	txn, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	meta := FileMeta{Mode: syscall.S_IFREG | 0o644}
	if _, err := txn.WriteFile(meta, 4<<20, bytes.NewReader(make([]byte, 4<<20))); err != nil {
		t.Fatalf("4 MB of 32: %v", err)
	}
	_, err = txn.WriteFile(meta, 16<<20, bytes.NewReader(bytes.Repeat([]byte{1}, 16<<20)))
	if err == nil || !strings.Contains(err.Error(), "min-free-space") {
		t.Fatalf("16 more MB of 32 with 20 MB kept free: %v", err)
	}
}

// A commit moves its objects into objects/ whole subdirectories at a time
// where objects/ has none of a prefix yet, and one by one where it has:
// both ways every object arrives.
func TestStagePublishesIntoExistingPrefixes(t *testing.T) {
	needRoot(t)
	needOstreeCLI(t)
	r := createBare(t, filepath.Join(t.TempDir(), "repo"))
	meta := FileMeta{Mode: syscall.S_IFREG | 0o644}
	var sums []Checksum
	for round := range 2 {
		txn, err := r.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 600 {
			data := fmt.Sprintf("round %d file %d", round, i)
			sum, err := txn.WriteFile(meta, int64(len(data)), strings.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			sums = append(sums, sum)
		}
		if _, err := txn.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, sum := range sums {
		if has, err := r.HasFile(sum); err != nil || !has {
			t.Fatalf("object %s not in objects/ after its commit (%v)", sum, err)
		}
	}
	ostreeCLI(t, r.Path(), "fsck", "--all")
}
