package treecmp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixedTime is the mtime every test path gets, so that only deliberate
// changes show up as mtime differences.
func fixedTime() unix.Timespec {
	return unix.NsecToTimespec(time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC).UnixNano())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown, mknod and trusted xattrs")
	}
}

// buildTree creates the baseline tree, lets mutate change it, and then
// pins every mtime (the mutations themselves touch directories).
func buildTree(t *testing.T, mutate func(root string)) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string) string { return filepath.Join(root, name) }
	must(os.WriteFile(at("f"), []byte("hello"), 0o644))
	must(os.Mkdir(at("d"), 0o755))
	must(os.WriteFile(at("d/inner"), []byte("inner"), 0o644))
	must(os.Mkdir(at("d/sub"), 0o755))
	must(os.Symlink("f", at("l")))
	must(unix.Mknod(at("cdev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(at("fifo"), 0o644))
	must(os.WriteFile(at("x"), []byte("xattrs"), 0o644))
	must(unix.Setxattr(at("x"), "user.a", []byte("1"), 0))
	must(unix.Setxattr(at("x"), "trusted.t", []byte("t"), 0))
	must(os.WriteFile(at("h1"), []byte("linked"), 0o644))
	must(os.Link(at("h1"), at("h2")))
	must(os.WriteFile(at("owned"), []byte("owned"), 0o640))
	must(os.Lchown(at("owned"), 1000, 1000))
	for _, p := range []string{"f", "x", "h1", "owned"} {
		must(os.Chmod(at(p), 0o644)) // undo the umask
	}
	if mutate != nil {
		mutate(root)
	}
	must(filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{fixedTime(), fixedTime()}, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return root
}

func TestIdenticalTreesHaveNoDifferences(t *testing.T) {
	requireRoot(t)
	diffs, err := Compare(buildTree(t, nil), buildTree(t, nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 0 {
		t.Fatalf("identical trees differ:\n%s", Report(diffs, 0))
	}
}

func TestEachAttributeDifferenceIsFound(t *testing.T) {
	requireRoot(t)
	type change struct {
		name     string
		mutate   func(t *testing.T, root string)
		wantPath string
		wantKind Kind
	}
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	changes := []change{
		{"missing file", func(t *testing.T, r string) { must(t, os.Remove(filepath.Join(r, "f"))) }, "f", Missing},
		{"extra file", func(t *testing.T, r string) { must(t, os.WriteFile(filepath.Join(r, "new"), nil, 0o644)) }, "new", Extra},
		{"file became dir", func(t *testing.T, r string) {
			must(t, os.Remove(filepath.Join(r, "f")))
			must(t, os.Mkdir(filepath.Join(r, "f"), 0o644))
		}, "f", Type},
		{"permission bits", func(t *testing.T, r string) { must(t, os.Chmod(filepath.Join(r, "f"), 0o600)) }, "f", Mode},
		{"setuid bit", func(t *testing.T, r string) { must(t, unix.Chmod(filepath.Join(r, "f"), 0o4644)) }, "f", Mode},
		{"sticky bit on dir", func(t *testing.T, r string) { must(t, unix.Chmod(filepath.Join(r, "d"), 0o1755)) }, "d", Mode},
		{"uid", func(t *testing.T, r string) { must(t, os.Lchown(filepath.Join(r, "owned"), 1001, 1000)) }, "owned", UID},
		{"gid", func(t *testing.T, r string) { must(t, os.Lchown(filepath.Join(r, "owned"), 1000, 100000)) }, "owned", GID},
		{"size", func(t *testing.T, r string) { must(t, os.WriteFile(filepath.Join(r, "f"), []byte("hello!"), 0o644)) }, "f", Size},
		{"content", func(t *testing.T, r string) { must(t, os.WriteFile(filepath.Join(r, "f"), []byte("jello"), 0o644)) }, "f", Content},
		{"symlink target", func(t *testing.T, r string) {
			must(t, os.Remove(filepath.Join(r, "l")))
			must(t, os.Symlink("g", filepath.Join(r, "l")))
		}, "l", Target},
		{"device numbers", func(t *testing.T, r string) {
			must(t, os.Remove(filepath.Join(r, "cdev")))
			must(t, unix.Mknod(filepath.Join(r, "cdev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
		}, "cdev", Device},
		{"fifo became file", func(t *testing.T, r string) {
			must(t, os.Remove(filepath.Join(r, "fifo")))
			must(t, os.WriteFile(filepath.Join(r, "fifo"), nil, 0o644))
		}, "fifo", Type},
		{"xattr value", func(t *testing.T, r string) { must(t, unix.Setxattr(filepath.Join(r, "x"), "user.a", []byte("2"), 0)) }, "x", Xattr},
		{"xattr added", func(t *testing.T, r string) {
			must(t, unix.Setxattr(filepath.Join(r, "f"), "user.new", []byte("v"), 0))
		}, "f", Xattr},
		{"trusted xattr removed", func(t *testing.T, r string) { must(t, unix.Removexattr(filepath.Join(r, "x"), "trusted.t")) }, "x", Xattr},
		{"security.capability added", func(t *testing.T, r string) {
			capability := []byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			must(t, unix.Setxattr(filepath.Join(r, "f"), "security.capability", capability, 0))
		}, "f", Xattr},
		{"hard link broken", func(t *testing.T, r string) {
			must(t, os.Remove(filepath.Join(r, "h2")))
			must(t, os.WriteFile(filepath.Join(r, "h2"), []byte("linked"), 0o644))
		}, "h1", HardLinks},
		{"link count", func(t *testing.T, r string) {
			must(t, os.Link(filepath.Join(r, "f"), filepath.Join(r, "d", "elsewhere")))
		}, "f", Nlink},
		{"missing directory", func(t *testing.T, r string) { must(t, os.RemoveAll(filepath.Join(r, "d"))) }, "d", Missing},
	}
	want := buildTree(t, nil)
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			got := buildTree(t, func(root string) { c.mutate(t, root) })
			diffs, err := Compare(want, got, Options{})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range diffs {
				found = found || (d.Path == c.wantPath && d.Kind == c.wantKind)
			}
			if !found {
				t.Errorf("no %s difference at %s; got:\n%s", c.wantKind, c.wantPath, Report(diffs, 0))
			}
		})
	}
}

func TestMtimeNanosecondsCount(t *testing.T) {
	requireRoot(t)
	want, got := buildTree(t, nil), buildTree(t, nil)
	later := unix.NsecToTimespec(unix.TimespecToNsec(fixedTime()) + 1)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(got, "l"), []unix.Timespec{later, later}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	diffs, err := Compare(want, got, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0].Kind != Mtime || diffs[0].Path != "l" {
		t.Fatalf("want one mtime difference on the symlink, got:\n%s", Report(diffs, 0))
	}
}

func TestMissingDirectoryReportedOnce(t *testing.T) {
	requireRoot(t)
	want := buildTree(t, nil)
	got := buildTree(t, func(root string) { os.RemoveAll(filepath.Join(root, "d")) })
	diffs, err := Compare(want, got, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 2 { // d itself, and the root's link count (one subdirectory fewer)
		t.Fatalf("want d missing and the root's nlink, got:\n%s", Report(diffs, 0))
	}
	if !strings.Contains(diffs[1].String(), "directory with 2 entries below") {
		t.Errorf("report does not say what is below d: %s", diffs[1])
	}
}

func TestOptionsRelaxComparison(t *testing.T) {
	requireRoot(t)
	want := buildTree(t, nil)
	got := buildTree(t, func(root string) {
		if err := os.Chmod(filepath.Join(root, "d"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(root, "d"), 5, 5); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(filepath.Join(root, "f"), "user.label", []byte("host"), 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(root, "d", "another"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	opts := Options{LooseMetadata: []string{"./d/"}, IgnoreXattrs: []string{"user.label"}, IgnoreDirNlink: true}
	diffs, err := Compare(want, got, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0].Kind != Extra || diffs[0].Path != "d/another" {
		t.Fatalf("want only the extra directory, got:\n%s", Report(diffs, 0))
	}
}

// AllowDroppedEmptyXattrs forgives exactly an empty value that want
// lacks: not a value that differs, not a non-empty one, not the reverse.
func TestAllowDroppedEmptyXattrs(t *testing.T) {
	requireRoot(t)
	want := buildTree(t, nil)
	got := buildTree(t, func(root string) {
		for name, value := range map[string]string{"user.empty": "", "user.full": "v"} {
			if err := unix.Setxattr(filepath.Join(root, "f"), name, []byte(value), 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Setxattr(filepath.Join(root, "x"), "user.a", nil, 0); err != nil {
			t.Fatal(err)
		}
	})
	if err := unix.Setxattr(filepath.Join(want, "d"), "user.gone", nil, 0); err != nil {
		t.Fatal(err)
	}
	strict, err := Compare(want, got, Options{})
	if err != nil {
		t.Fatal(err)
	}
	relaxed, err := Compare(want, got, Options{AllowDroppedEmptyXattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(strict) != 4 {
		t.Errorf("strict comparison: want 4 xattr differences, got:\n%s", Report(strict, 0))
	}
	var kept []string
	for _, d := range relaxed {
		kept = append(kept, d.Path+" "+d.Want+" "+d.Got)
	}
	if want := "d user.gone=\"\" user.gone absent|f user.full absent user.full=\"v\"|x user.a=\"1\" user.a=\"\""; strings.Join(kept, "|") != want {
		t.Errorf("relaxed comparison kept %q, want %q", kept, want)
	}
}

// TestDeeperThanPathMax checks that trees whose paths exceed PATH_MAX are
// scanned, as the deep-path test image produces them.
func TestDeeperThanPathMax(t *testing.T) {
	build := func() string {
		root := t.TempDir()
		fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 1000 {
			if err := unix.Mkdirat(fd, "d0000", 0o755); err != nil {
				t.Fatal(err)
			}
			next, err := unix.Openat(fd, "d0000", unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
			fd = next
		}
		defer unix.Close(fd)
		leaf, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(leaf, []byte("deep")); err != nil {
			t.Fatal(err)
		}
		unix.Close(leaf)
		return root
	}
	want, got := build(), build()
	diffs, err := Compare(want, got, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Only mtimes differ: the trees were built at different moments.
	for _, d := range diffs {
		if d.Kind != Mtime {
			t.Errorf("unexpected difference %s", d)
		}
	}
	tr, err := scan(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != 1002 {
		t.Fatalf("scanned %d paths, want 1002", len(tr))
	}
}

// IgnoreMtime and IgnoreLinks forgive what an OSTree checkout changes:
// mtimes, and files linked because their content is equal. Directory link
// counts and content are still compared.
func TestCheckoutOptions(t *testing.T) {
	requireRoot(t)
	want := buildTree(t, nil)
	got := buildTree(t, func(root string) {
		// Split the hard-link group, and link two equal files instead.
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.Remove(filepath.Join(root, "h2")))
		must(os.WriteFile(filepath.Join(root, "h2"), []byte("linked"), 0o644))
		must(os.Chmod(filepath.Join(root, "h2"), 0o644))
		must(os.Remove(filepath.Join(root, "d", "inner")))
		must(os.WriteFile(filepath.Join(root, "d", "inner"), []byte("INNER"), 0o644))
		must(os.Chmod(filepath.Join(root, "d", "inner"), 0o644))
	})
	later := unix.NsecToTimespec(unix.TimespecToNsec(fixedTime()) + 1e9)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(got, "f"), []unix.Timespec{later, later}, 0); err != nil {
		t.Fatal(err)
	}
	diffs, err := Compare(want, got, Options{IgnoreMtime: true, IgnoreLinks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0].Kind != Content || diffs[0].Path != "d/inner" {
		t.Fatalf("want only the content difference, got:\n%s", Report(diffs, 0))
	}
	diffs, _ = Compare(want, got, Options{})
	kinds := map[Kind]bool{}
	for _, d := range diffs {
		kinds[d.Kind] = true
	}
	if !kinds[Mtime] || !kinds[Nlink] || !kinds[HardLinks] {
		t.Fatalf("without the options, mtime and link differences must show:\n%s", Report(diffs, 0))
	}
}
