package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
)

// requireFUSE skips a test that needs a real mount when this machine
// cannot give it one; in CI a missing FUSE is a failure.
func requireFUSE(t testing.TB) {
	t.Helper()
	var missing string
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = "/dev/fuse (" + err.Error() + ")"
	} else if os.Geteuid() != 0 {
		missing = "root (mount(2) of a FUSE filesystem without fusermount)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs %s, which CI must provide", missing)
	}
	t.Skipf("this test needs %s; run as root on a machine with /dev/fuse", missing)
}

// fakeReader serves layers' uncompressed bytes from memory. A layer listed
// in failures answers every read with that error.
type fakeReader struct {
	mu       sync.Mutex
	layers   map[digest.Digest][]byte
	failures map[digest.Digest]error
}

func newFakeReader() *fakeReader {
	return &fakeReader{layers: map[digest.Digest][]byte{}, failures: map[digest.Digest]error{}}
}

func (r *fakeReader) ReadAt(_ context.Context, layer digest.Digest, p []byte, off int64) (int, error) {
	r.mu.Lock()
	data, ok := r.layers[layer]
	fail := r.failures[layer]
	r.mu.Unlock()
	if fail != nil {
		return 0, fail
	}
	if !ok {
		return 0, fmt.Errorf("layer %s: %w", layer, index.ErrNotFound)
	}
	if off >= int64(len(data)) {
		return 0, errors.New("offset beyond the layer")
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, errors.New("short layer")
	}
	return n, nil
}

func (r *fakeReader) fail(layer digest.Digest, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[layer] = err
}

// fixture builds layers into a memstore and their bytes into a fakeReader.
type fixture struct {
	store  *memstore.Store
	reader *fakeReader
}

func newFixture() *fixture {
	return &fixture{store: memstore.New(), reader: newFakeReader()}
}

// layerEntry is a tar entry and, for a regular file, its content.
type layerEntry struct {
	index.Entry
	content string
}

// layer records a layer whose stream holds each file's content after a
// 512-byte header, as a tar stream would.
func (f *fixture) layer(t testing.TB, name string, entries ...layerEntry) digest.Digest {
	t.Helper()
	ctx := context.Background()
	d := digest.FromString("layer " + name)
	w, err := f.store.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	for _, e := range entries {
		stream.Write(make([]byte, 512))
		if e.Type == index.TypeRegular {
			e.Offset = int64(stream.Len())
			e.Size = int64(len(e.content))
			stream.WriteString(e.content)
		}
		if e.ModTime.IsZero() {
			e.ModTime = time.Unix(1700000000, 0).UTC()
		}
		if err := w.AddEntry(e.Entry); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(index.LayerInfo{Compression: index.Uncompressed,
		UncompressedSize: int64(stream.Len())}); err != nil {
		t.Fatal(err)
	}
	f.reader.mu.Lock()
	f.reader.layers[d] = stream.Bytes()
	f.reader.mu.Unlock()
	return d
}

// rawLayer records a layer from entries whose offsets already point into
// stream, for tests whose data is too big to copy around.
func (f *fixture) rawLayer(t testing.TB, name string, stream []byte, entries ...index.Entry) digest.Digest {
	t.Helper()
	ctx := context.Background()
	d := digest.FromString("layer " + name)
	w, err := f.store.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(index.LayerInfo{Compression: index.Uncompressed, UncompressedSize: int64(len(stream))}); err != nil {
		t.Fatal(err)
	}
	f.reader.mu.Lock()
	f.reader.layers[d] = stream
	f.reader.mu.Unlock()
	return d
}

func (f *fixture) view(t testing.TB, layers ...digest.Digest) *index.View {
	t.Helper()
	v, err := index.BuildView(context.Background(), f.store, layers)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func dirEntry(path string, mode uint32) layerEntry {
	return layerEntry{Entry: index.Entry{Path: path, Type: index.TypeDir, Mode: mode}}
}

func fileEntry(path string, mode uint32, content string) layerEntry {
	return layerEntry{Entry: index.Entry{Path: path, Type: index.TypeRegular, Mode: mode}, content: content}
}

// logBuffer collects what the package logs, for tests that check errors
// are reported with their context.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testLogger logs through t, so a failing test shows what the package said.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// mountForTest mounts root in a fresh directory and unmounts it when the
// test ends.
func mountForTest(t testing.TB, root *Root, opts Options) (string, *fuse.Server) {
	t.Helper()
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	server, err := Mount(mnt, root, opts)
	if err != nil {
		t.Fatal(err)
	}
	unmountAtCleanup(t, mnt, server)
	return mnt, server
}

// unmountAtCleanup unmounts server's mount at mnt when the test ends. A
// mount still busy then means the test left a descriptor open on it, which
// fails the test; the connection is aborted before the mount is detached,
// because a test binary that exits holding a descriptor on its own mount
// hangs in the kernel for good: the close at exit waits for a reply from
// the daemon that is exiting.
func unmountAtCleanup(t testing.TB, mnt string, server *fuse.Server) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatalf("mount at %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		err := server.Unmount()
		if err == nil {
			return
		}
		var now unix.Stat_t
		if unix.Stat(mnt, &now) != nil || now.Dev != st.Dev {
			t.Logf("unmount %s: %v; the mount is no longer there", mnt, err)
			return
		}
		t.Errorf("unmount %s: %v; is a descriptor left open on it? Aborting its connection", mnt, err)
		abortFUSEConnection(t, st.Dev)
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("detach %s: %v", mnt, err)
		}
	})
}

// abortFUSEConnection ends the FUSE connection of the mount whose st_dev is
// dev, through fusectl, so that requests waiting on it fail instead of
// waiting for ever.
func abortFUSEConnection(t testing.TB, dev uint64) {
	const connections = "/sys/fs/fuse/connections"
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	if !bytes.Contains(mountinfo, []byte(" - fusectl ")) {
		if err := unix.Mount("fusectl", connections, "fusectl", 0, ""); err != nil {
			t.Errorf("mounting fusectl to abort a connection: %v", err)
			return
		}
	}
	// fusectl names a connection by the kernel's dev_t: major<<20 | minor.
	id := unix.Major(dev)<<20 | unix.Minor(dev)
	if err := os.WriteFile(fmt.Sprintf("%s/%d/abort", connections, id), []byte("1"), 0); err != nil {
		t.Errorf("aborting FUSE connection %d: %v", id, err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
