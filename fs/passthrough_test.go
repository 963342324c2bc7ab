package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
)

// backerMode is what a fakeBacker answers.
type backerMode int

const (
	backerServes    backerMode = iota // a file with the image file's bytes
	backerHasNone                     // (nil, nil): not materialized yet
	backerFails                       // an error
	backerWrongSize                   // a file one byte too long
)

// errBackerBroke is what a failing fakeBacker answers.
var errBackerBroke = errors.New("the backer broke")

// fakeBacker materializes image files into a directory on first use, from
// the fixture's layers, and answers with them as its mode says.
type fakeBacker struct {
	t      testing.TB
	reader ContentReader
	dir    string
	// transform, when set, changes the bytes written, so that a test can
	// tell backing bytes from the daemon's. It must keep the length.
	transform func([]byte) []byte

	mu    sync.Mutex
	mode  backerMode
	calls int
}

func newFakeBacker(t testing.TB, reader ContentReader) *fakeBacker {
	return &fakeBacker{t: t, reader: reader, dir: t.TempDir()}
}

func (b *fakeBacker) setMode(m backerMode) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mode = m
}

func (b *fakeBacker) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

func (b *fakeBacker) Backing(ctx context.Context, image digest.Digest, view *index.View, ino index.Ino) (*os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	switch b.mode {
	case backerHasNone:
		return nil, nil
	case backerFails:
		return nil, errBackerBroke
	}
	in, ok := view.Stat(ino)
	if !ok || in.Type != index.TypeRegular {
		return nil, fmt.Errorf("inode %d of %s is no regular file", ino, image)
	}
	name := filepath.Join(b.dir, fmt.Sprintf("%s-%d", image.Encoded()[:12], ino))
	if b.mode == backerWrongSize {
		name += ".long"
	}
	if _, err := os.Stat(name); errors.Is(err, os.ErrNotExist) {
		data := make([]byte, in.Size)
		if in.Size > 0 {
			if _, err := index.ReadFile(ctx, b.reader, view.Layers()[in.Layer], &in, data, 0); err != nil {
				return nil, fmt.Errorf("materializing inode %d: %w", ino, err)
			}
		}
		if b.transform != nil {
			data = b.transform(data)
		}
		if b.mode == backerWrongSize {
			data = append(data, '!')
		}
		if err := os.WriteFile(name, data, 0o444); err != nil {
			return nil, err
		}
	}
	return os.Open(name)
}

// openBackingFiles counts this process's descriptors of files in dir.
func openBackingFiles(t testing.TB, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// mountWithBacker mounts image A as ns/app with backer and returns the root
// and the image's directory. It skips the test when the kernel does not let
// image files pass through.
func mountWithBacker(t *testing.T, im *testImages, backer Backer, log *slog.Logger) (*Root, string) {
	t.Helper()
	requireFUSE(t)
	opts := Options{Backer: backer, Logger: log}
	root := NewRoot(im.reader, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ := mountForTest(t, root, opts)
	if !root.Passthrough() {
		t.Skip("the kernel does not let this daemon use FUSE passthrough (Linux 6.9+ and CAP_SYS_ADMIN)")
	}
	return root, filepath.Join(mnt, "ns", "app", imageDirName(im.a))
}

// passthroughFiles are image A's regular files and their contents.
var passthroughFiles = map[string]string{
	"etc/passwd":          passwdContent,
	"etc/shadow":          shadowContent,
	"etc/os-release":      osReleaseA,
	"usr/bin/hardtool":    hardContent,
	"ünïcødé/日本語.txt":     unicodeContent,
	"home/user/notes.txt": "remember the milk\n",
}

// checkContent reads path whole, at offsets and through a mapping, and
// compares with want.
func checkContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Errorf("%s reads %q, %v; want %q", path, got, err, want)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int{1, len(want) / 2, len(want) - 1} {
		buf := make([]byte, 4)
		n, err := f.ReadAt(buf, int64(off))
		if w := want[off:min(off+4, len(want))]; string(buf[:n]) != w || (err != nil && err != io.EOF) {
			t.Errorf("%s at %d reads %q, %v; want %q", path, off, buf[:n], err, w)
		}
	}
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Errorf("mmap %s: %v", path, err)
		return
	}
	defer unix.Munmap(m)
	if string(m) != want {
		t.Errorf("%s mapped holds %q, want %q", path, m, want)
	}
}

// With a backing file for every image file, reads never reach the daemon.
func TestPassthroughServesMaterializedFiles(t *testing.T) {
	im := newTestImages(t)
	var logs logBuffer
	backer := newFakeBacker(t, im.reader)
	root, img := mountWithBacker(t, im, backer, logs.logger())
	if !strings.Contains(logs.String(), "image files: passthrough to materialized objects") {
		t.Errorf("the mount did not say it passes image files through; log:\n%s", logs.String())
	}

	for path, want := range passthroughFiles {
		checkContent(t, filepath.Join(img, path), want)
	}
	st := root.Stats()
	if st.Reads != 0 {
		t.Errorf("the daemon answered %d READs of image files, want none", st.Reads)
	}
	// checkContent opens every file twice.
	if st.PassthroughOpens < uint64(2*len(passthroughFiles)) || st.LazyOpens != 0 {
		t.Errorf("stats %+v; want %d passthrough opens and no lazy ones", st, 2*len(passthroughFiles))
	}
	// An empty file passes through as well.
	if data, err := os.ReadFile(filepath.Join(img, "etc/empty")); err != nil || len(data) != 0 {
		t.Errorf("etc/empty reads %q, %v", data, err)
	}
	if st := root.Stats(); st.Reads != 0 {
		t.Errorf("the daemon answered %d READs of image files, want none", st.Reads)
	}
}

// The bytes read come from the backing file: a backer whose files differ
// from the layers shows through.
func TestPassthroughReadsTheBackingFile(t *testing.T) {
	im := newTestImages(t)
	backer := newFakeBacker(t, im.reader)
	backer.transform = bytes.ToUpper
	root, img := mountWithBacker(t, im, backer, testLogger(t))
	checkContent(t, filepath.Join(img, "etc/passwd"), strings.ToUpper(passwdContent))
	if st := root.Stats(); st.Reads != 0 || st.PassthroughOpens == 0 {
		t.Errorf("stats %+v; want passthrough opens and no READs", st)
	}
}

// Without a backing file, or when the Backer fails or answers a file of the
// wrong size, the open falls back to lazy reads; a failure is logged with
// the file's path.
func TestPassthroughFallsBackToLazyReads(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode backerMode
		log  string // in the log, "" for nothing at error level
	}{
		{"none yet", backerHasNone, ""},
		{"error", backerFails, errBackerBroke.Error()},
		{"wrong size", backerWrongSize, "holds 31 bytes, the image file 30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := newTestImages(t)
			var logs logBuffer
			backer := newFakeBacker(t, im.reader)
			backer.setMode(tc.mode)
			root, img := mountWithBacker(t, im, backer, logs.logger())

			checkContent(t, filepath.Join(img, "etc/passwd"), passwdContent)
			st := root.Stats()
			if st.Reads == 0 || st.LazyOpens == 0 || st.PassthroughOpens != 0 || st.BackingFiles != 0 {
				t.Errorf("stats %+v; want lazy opens and READs only", st)
			}
			logged := ""
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "level=ERROR") {
					logged += line
				}
			}
			if tc.log == "" {
				if logged != "" {
					t.Errorf("logged errors:\n%s", logged)
				}
				return
			}
			for _, want := range []string{tc.log, "path=etc/passwd", "ino=", "image=" + im.a.String()} {
				if !strings.Contains(logged, want) {
					t.Errorf("the error log lacks %q:\n%s", want, logged)
				}
			}
		})
	}
}

// A file open lazily (also only through a mapping) is not opened in
// passthrough mode, which the kernel would fail with EIO, until the last
// lazy open is released; and a file open in passthrough mode is opened so
// again, whatever the Backer says by then.
func TestPassthroughWaitsForLazyOpensToEnd(t *testing.T) {
	im := newTestImages(t)
	backer := newFakeBacker(t, im.reader)
	backer.setMode(backerHasNone)
	root, img := mountWithBacker(t, im, backer, testLogger(t))
	path := filepath.Join(img, "etc/passwd")

	lazy, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mapped, err := unix.Mmap(int(lazy.Fd()), 0, len(passwdContent), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	// The mapping holds the lazy open after its descriptor is closed.
	lazy.Close()
	backer.setMode(backerServes)

	second, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening a file that is mapped lazily, once it has a backing file: %v", err)
	}
	if data, err := io.ReadAll(second); err != nil || string(data) != passwdContent {
		t.Errorf("second open reads %q, %v", data, err)
	}
	second.Close()
	if string(mapped) != passwdContent {
		t.Errorf("the mapping holds %q", mapped)
	}
	if st := root.Stats(); st.PassthroughOpens != 0 || st.LazyOpens != 2 {
		t.Errorf("stats %+v while the file is open lazily; want 2 lazy opens, none in passthrough", st)
	}
	if err := unix.Munmap(mapped); err != nil {
		t.Fatal(err)
	}

	// Once the kernel has released every lazy open, the file passes
	// through. RELEASE comes asynchronously after the last reference.
	var held *os.File
	eventually(t, 10*time.Second, "an open in passthrough mode", func() error {
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		data, err := io.ReadAll(f)
		if err != nil || string(data) != passwdContent {
			f.Close()
			t.Fatalf("reads %q, %v", data, err)
		}
		if root.Stats().PassthroughOpens == 0 {
			f.Close()
			return errors.New("the file is still opened lazily")
		}
		held = f
		return nil
	})
	defer held.Close()

	// While it is open in passthrough mode, a lazy answer would fail; the
	// Backer is not even asked.
	calls := backer.callCount()
	backer.setMode(backerFails)
	again, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening a file that is open in passthrough mode: %v", err)
	}
	defer again.Close()
	if data, err := io.ReadAll(again); err != nil || string(data) != passwdContent {
		t.Errorf("a further open reads %q, %v", data, err)
	}
	if st := root.Stats(); st.PassthroughOpens != 2 || st.BackingFiles != 1 {
		t.Errorf("stats %+v; want 2 opens sharing one backing file", st)
	}
	if n := backer.callCount(); n != calls {
		t.Errorf("the Backer was asked %d more times for a file open in passthrough mode", n-calls)
	}
}

// Concurrent opens of one file share one backing file, and every backing
// file is unregistered and closed once the last open of it is released.
func TestPassthroughReleasesBackingFiles(t *testing.T) {
	im := newTestImages(t)
	backer := newFakeBacker(t, im.reader)
	root, img := mountWithBacker(t, im, backer, testLogger(t))

	var files []*os.File
	for range 3 {
		for path := range passthroughFiles {
			f, err := os.Open(filepath.Join(img, path))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
	}
	if n := openBackingFiles(t, backer.dir); n != len(passthroughFiles) {
		t.Errorf("%d backing files open for %d files opened 3 times each", n, len(passthroughFiles))
	}
	if st := root.Stats(); st.BackingFiles != int64(len(passthroughFiles)) || st.PassthroughOpens != uint64(len(files)) {
		t.Errorf("stats %+v; want %d backing files and %d passthrough opens", st, len(passthroughFiles), len(files))
	}
	for _, f := range files {
		if _, err := io.ReadAll(f); err != nil {
			t.Error(err)
		}
		f.Close()
	}
	eventually(t, 10*time.Second, "backing files closed", func() error {
		if n := openBackingFiles(t, backer.dir); n != 0 {
			return fmt.Errorf("%d still open", n)
		}
		if n := root.Stats().BackingFiles; n != 0 {
			return fmt.Errorf("%d still registered", n)
		}
		return nil
	})
}

// Many readers open files while the Backer changes its mind: every open
// gets a mode the kernel accepts, so no read fails.
func TestPassthroughConcurrentOpens(t *testing.T) {
	im := newTestImages(t)
	backer := newFakeBacker(t, im.reader)
	var logs logBuffer
	root, img := mountWithBacker(t, im, backer, logs.logger())
	paths := make([]string, 0, len(passthroughFiles))
	for p := range passthroughFiles {
		paths = append(paths, p)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		modes := []backerMode{backerServes, backerHasNone, backerFails}
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				backer.setMode(modes[rand.IntN(len(modes))])
			}
		}
	})
	var failures sync.Map
	var readers sync.WaitGroup
	for range 8 {
		readers.Go(func() {
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				p := paths[rand.IntN(len(paths))]
				f, err := os.Open(filepath.Join(img, p))
				if err != nil {
					failures.Store(p, err)
					return
				}
				data, err := io.ReadAll(f)
				f.Close()
				if err != nil || string(data) != passthroughFiles[p] {
					failures.Store(p, fmt.Errorf("read %q, %v", data, err))
					return
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	failures.Range(func(p, err any) bool {
		t.Errorf("%s: %v", p, err)
		return true
	})
	st := root.Stats()
	if st.PassthroughOpens == 0 || st.LazyOpens == 0 {
		t.Errorf("stats %+v; want opens in both modes", st)
	}
	eventually(t, 10*time.Second, "backing files closed", func() error {
		if n := root.Stats().BackingFiles; n != 0 {
			return fmt.Errorf("%d still registered", n)
		}
		return nil
	})
	// The Backer's failures are logged; nothing else may be.
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "level=ERROR") && !strings.Contains(line, errBackerBroke.Error()) {
			t.Errorf("logged %s", line)
		}
	}
}

// Without a Backer the kernel opens image files without asking: the first
// OPEN gets ENOSYS and none follows, as before passthrough.
func TestNoBackerNeverAnswersOpen(t *testing.T) {
	var logs logBuffer
	opts := Options{Logger: logs.logger(), Debug: true}
	im := newTestImages(t)
	requireFUSE(t)
	root := NewRoot(im.reader, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ := mountForTest(t, root, opts)
	img := filepath.Join(mnt, "ns", "app", imageDirName(im.a))

	for range 2 {
		for path, want := range passthroughFiles {
			if got, err := os.ReadFile(filepath.Join(img, path)); err != nil || string(got) != want {
				t.Errorf("%s reads %q, %v", path, got, err)
			}
		}
	}
	if root.Passthrough() {
		t.Error("Passthrough() without a Backer")
	}
	st := root.Stats()
	if st.Reads == 0 || st.LazyOpens != 0 || st.PassthroughOpens != 0 {
		t.Errorf("stats %+v; want READs and no answered opens", st)
	}
	// go-fuse's own poll hack file is opened too; count image files only.
	log := logs.String()
	requests := func(op string) int {
		n := 0
		for _, m := range regexp.MustCompile(`: `+op+` n(\d+) `).FindAllStringSubmatch(log, -1) {
			if id, err := strconv.ParseUint(m[1], 10, 64); err == nil && isImageNode(id) {
				n++
			}
		}
		return n
	}
	if n := requests("OPEN"); n != 1 {
		t.Errorf("the kernel sent %d OPENs of image files for %d opens; want only the first", n, 2*len(passthroughFiles))
	}
	if n := requests("RELEASE"); n != 0 {
		t.Errorf("the kernel sent %d RELEASEs of image files", n)
	}
	if !strings.Contains(log, "image files: lazy reads only, because no Backer is configured") {
		t.Error("the mount did not say why image files are read lazily")
	}
}

// Until the kernel grants passthrough, Open answers ENOSYS also with a
// Backer, so that the kernel stops asking; and it checks the open first.
func TestImageFSOpenWithoutPassthrough(t *testing.T) {
	fs, img := imageFSForTest(t)
	backer := newFakeBacker(t, nil)
	fs.opens = newOpenTable(backer, &fs.root.stats, testLogger(t))
	file, _ := img.view.LookupPath("etc/passwd")
	dir, _ := img.view.LookupPath("etc")
	for _, tc := range []struct {
		ino   index.Ino
		flags uint32
		want  fuse.Status
	}{
		{file, syscall.O_RDONLY, fuse.ENOSYS},
		{file, syscall.O_RDWR, fuse.EROFS},
		{file, syscall.O_RDONLY | syscall.O_TRUNC, fuse.EROFS},
		{dir, syscall.O_RDONLY, fuse.EINVAL},
	} {
		var out fuse.OpenOut
		if st := fs.Open(nil, &fuse.OpenIn{InHeader: header(img.ino(tc.ino)), Flags: tc.flags}, &out); st != tc.want {
			t.Errorf("Open(ino %d, %#x) = %v, want %v", tc.ino, tc.flags, st, tc.want)
		}
	}
	if n := backer.callCount(); n != 0 {
		t.Errorf("the Backer was asked %d times", n)
	}
}

// overlayBacker answers with the fakeBacker's files as an overlay mount
// shows them: files the kernel refuses to pass through to.
type overlayBacker struct {
	inner *fakeBacker
	dir   string
}

func (b overlayBacker) Backing(ctx context.Context, image digest.Digest, view *index.View, ino index.Ino) (*os.File, error) {
	f, err := b.inner.Backing(ctx, image, view, ino)
	if f == nil || err != nil {
		return f, err
	}
	f.Close()
	return os.Open(filepath.Join(b.dir, filepath.Base(f.Name())))
}

// A backing file the kernel refuses (one on overlayfs, a stacked file
// system) leaves the file to lazy reads, and the refusal is logged at error
// level once, not for every open.
func TestPassthroughRefusedBackingFileFallsBack(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	inner := newFakeBacker(t, im.reader)
	paths := []string{"etc/passwd", "etc/shadow"}
	for _, p := range paths {
		ino, _ := im.viewA.LookupPath(p)
		f, err := inner.Backing(context.Background(), im.a, im.viewA, ino)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	work := t.TempDir()
	upper, workdir, merged := filepath.Join(work, "upper"), filepath.Join(work, "work"), filepath.Join(work, "merged")
	for _, d := range []string{upper, workdir, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY,
		"lowerdir="+inner.dir+",upperdir="+upper+",workdir="+workdir); err != nil {
		t.Skipf("no overlayfs to refuse a backing file with: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })

	var logs logBuffer
	root, img := mountWithBacker(t, im, overlayBacker{inner, merged}, logs.logger())
	for _, p := range paths {
		checkContent(t, filepath.Join(img, p), passthroughFiles[p])
	}
	if st := root.Stats(); st.PassthroughOpens != 0 || st.LazyOpens == 0 || st.BackingFiles != 0 {
		t.Errorf("stats %+v; want lazy opens only", st)
	}
	refusals := 0
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "level=ERROR") {
			refusals++
			if !strings.Contains(line, "the kernel refused a backing file") || !strings.Contains(line, syscall.ELOOP.Error()) {
				t.Errorf("logged %s", line)
			}
		}
	}
	if refusals != 1 {
		t.Errorf("%d refusals logged at error level, want 1:\n%s", refusals, logs.String())
	}
}
