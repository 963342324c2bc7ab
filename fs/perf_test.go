package fs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
)

// These tests report figures (run with -v) and fail only when something is
// far off what this machine measures; -short skips them.

func TestPerfFindLargeTree(t *testing.T) {
	if testing.Short() {
		t.Skip("performance figures are skipped in -short mode")
	}
	requireFUSE(t)
	const dirs, filesPerDir = 100, 100
	f := newFixture()
	entries := []layerEntry{dirEntry("", 0o755)}
	for d := range dirs {
		entries = append(entries, dirEntry(fmt.Sprintf("d%03d", d), 0o755))
		for i := range filesPerDir {
			entries = append(entries, fileEntry(fmt.Sprintf("d%03d/f%03d", d, i), 0o644, "x"))
		}
	}
	layer := f.layer(t, "large", entries...)
	view := f.view(t, layer)
	manifest := digest.FromString("large manifest")
	opts := Options{Logger: testLogger(t)}
	root := NewRoot(f.reader, opts)
	root.SetStream("ns", "large", map[string]digest.Digest{"latest": manifest},
		map[digest.Digest]*index.View{manifest: view})
	mnt, _ := mountForTest(t, root, opts)
	img := filepath.Join(mnt, "ns", "large", "latest") + "/"

	run := func(args ...string) (time.Duration, int) {
		start := time.Now()
		out, err := exec.Command("find", append([]string{img}, args...)...).Output()
		if err != nil {
			t.Fatalf("find %v: %v", args, err)
		}
		return time.Since(start), bytes.Count(out, []byte("\n"))
	}
	want := 1 + dirs + dirs*filesPerDir
	for _, pass := range []struct {
		name string
		args []string
	}{
		{"names, cold", nil},
		{"names, warm", nil},
		{"with stat, warm", []string{"-printf", "%m %s %u\n"}},
	} {
		took, n := run(pass.args...)
		if n != want {
			t.Errorf("find %s listed %d entries, want %d", pass.name, n, want)
		}
		t.Logf("find over %d entries (%s): %v", n, pass.name, took)
		if took > 5*time.Second {
			t.Errorf("find %s took %v", pass.name, took)
		}
	}
}

// TestPerfSequentialRead reads a 100 MB file with dd three times: first
// ever (the kernel allocates page cache, which on a VM that backs guest
// memory lazily costs more than FUSE does), cold (the file's pages dropped
// with fadvise, so every byte comes from the daemon) and warm.
func TestPerfSequentialRead(t *testing.T) {
	if testing.Short() {
		t.Skip("performance figures are skipped in -short mode")
	}
	requireFUSE(t)
	const size, header = 100 << 20, 512
	stream := make([]byte, header+size)
	for i := range size {
		stream[header+i] = byte(i*7 + i>>12)
	}
	want := sha256.Sum256(stream[header:])
	f := newFixture()
	stamp := time.Unix(1700000000, 0)
	layer := f.rawLayer(t, "big", stream,
		index.Entry{Path: "", Type: index.TypeDir, Mode: 0o755, ModTime: stamp},
		index.Entry{Path: "big", Type: index.TypeRegular, Mode: 0o644, Size: size, Offset: header, ModTime: stamp})
	view := f.view(t, layer)
	manifest := digest.FromString("big manifest")
	opts := Options{Logger: testLogger(t)}
	root := NewRoot(f.reader, opts)
	root.SetStream("ns", "big", map[string]digest.Digest{"latest": manifest},
		map[digest.Digest]*index.View{manifest: view})
	mnt, _ := mountForTest(t, root, opts)
	path := filepath.Join(mnt, "ns", "big", "latest", "big")

	dropPageCache := func() {
		fd, err := unix.Open(path, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
	for _, pass := range []string{"first ever", "cold", "warm"} {
		if pass == "cold" {
			dropPageCache()
		}
		start := time.Now()
		out, err := exec.Command("dd", "if="+path, "of=/dev/null", "bs=1M").CombinedOutput()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("dd: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), fmt.Sprint(size)+" bytes") {
			t.Errorf("dd read other than %d bytes:\n%s", size, out)
		}
		t.Logf("dd of %d MiB, %s: %.0f MB/s (%v)", size>>20, pass, float64(size)/1e6/took.Seconds(), took)
	}

	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	h := sha256.New()
	if _, err := io.Copy(h, file); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Error("content read through the mount differs")
	}
}
