package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A busy mount is unmounted within bounded time: detached lazily, with
// what held it in the log, and the mountpoint is free for the next mount.
func TestUnmountBusyMountInBoundedTime(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	server, err := Mount(mnt, root, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { server.Wait(); close(served) }()

	// Another process keeps the mount busy: its working directory is
	// inside an image.
	holder := exec.Command("sleep", "600")
	holder.Dir = filepath.Join(mnt, "ns", "app", imageDirName(im.a))
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	stopHolder := func() { _ = holder.Process.Kill(); _ = holder.Wait() }
	t.Cleanup(stopHolder)

	var logged logBuffer
	start := time.Now()
	err = Unmount(server, mnt, time.Second, logged.logger())
	if err != nil {
		t.Fatalf("unmount of a busy mount: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("unmount took %s", took)
	}
	if !strings.Contains(logged.String(), "(sleep)") {
		t.Errorf("log does not name the process holding the mount:\n%s", logged.String())
	}
	if n := countExplodefsMounts(t, mnt); n != 0 {
		t.Fatalf("%d explodefs mounts still at %s", n, mnt)
	}

	// The next daemon mounts at once, while the old mount still serves
	// the process inside it.
	next := NewRoot(im.reader, Options{Logger: testLogger(t)})
	next.SetStream("next", "app", tags, images)
	nextServer, err := Mount(mnt, next, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("mounting again after a lazy detach: %v", err)
	}
	unmountAtCleanup(t, mnt, nextServer)
	if got := readDirNames(t, mnt); !slices.Equal(got, []string{"next"}) {
		t.Errorf("new mount lists %q", got)
	}

	// Once the holder is gone, the old connection ends.
	stopHolder()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Error("the detached mount's server still runs after its last user left")
	}
}
