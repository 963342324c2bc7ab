package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// childMountEnv makes the test binary act as a daemon that mounts at the
// named directory and serves until it is killed.
const childMountEnv = "EXPLODEFS_FS_TEST_CHILD_MOUNTPOINT"

// TestStaleMountChild is the daemon TestMountClearsStaleMount kills; it does
// nothing in a normal run.
func TestStaleMountChild(t *testing.T) {
	mnt := os.Getenv(childMountEnv)
	if mnt == "" {
		t.Skip("runs only as the child of TestMountClearsStaleMount")
	}
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{})
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	if _, err := Mount(mnt, root, Options{}); err != nil {
		fmt.Println("mount failed:", err)
		os.Exit(1)
	}
	fmt.Println("mounted")
	select {}
}

func TestMountClearsStaleMount(t *testing.T) {
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, leave no mount behind.
	t.Cleanup(func() {
		for range maxStaleMounts {
			if unix.Unmount(mnt, unix.MNT_DETACH) != nil {
				return
			}
		}
	})

	child := exec.Command(os.Args[0], "-test.run=^TestStaleMountChild$")
	child.Env = append(os.Environ(), childMountEnv+"="+mnt)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "mounted" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child daemon: %q, %v", line, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "ns", "app", "latest", "etc", "passwd")); err != nil {
		t.Fatalf("child's mount: %v", err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	// What a killed daemon leaves.
	eventually(t, 5*time.Second, "the dead mount reports ENOTCONN", func() error {
		if _, err := os.Stat(mnt); !errors.Is(err, syscall.ENOTCONN) {
			return fmt.Errorf("stat: %v", err)
		}
		return nil
	})

	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	server, err := Mount(mnt, root, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("mounting over the stale mount: %v", err)
	}
	unmountAtCleanup(t, mnt, server)
	if data, err := os.ReadFile(filepath.Join(mnt, "ns", "app", "latest", "etc", "passwd")); err != nil || string(data) != passwdContent {
		t.Errorf("reading from the new mount: %q, %v", data, err)
	}
	if n := countExplodefsMounts(t, mnt); n != 1 {
		t.Errorf("%d explodefs mounts at %s, want 1", n, mnt)
	}
}

// TestMountReplacesLiveMount: an explodefs mount that still answers, but
// that no daemon of ours should own any more, is detached too.
func TestMountReplacesLiveMount(t *testing.T) {
	im := newTestImages(t)
	first := NewRoot(im.reader, Options{})
	tags, images := im.imageAOnly()
	first.SetStream("old", "app", tags, images)
	mnt, _ := mountForTest(t, first, Options{})

	second := NewRoot(im.reader, Options{Logger: testLogger(t)})
	second.SetStream("new", "app", tags, images)
	server, err := Mount(mnt, second, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	unmountAtCleanup(t, mnt, server)
	if got := readDirNames(t, mnt); !slices.Equal(got, []string{"new"}) {
		t.Errorf("root lists %q, want the new catalog", got)
	}
	if n := countExplodefsMounts(t, mnt); n != 1 {
		t.Errorf("%d explodefs mounts at %s, want 1", n, mnt)
	}
}

func TestMountOptions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		want, deny []string
	}{
		{"default", DefaultOptions(), []string{"ro", "nosuid", "nodev", "default_permissions", "allow_other"}, nil},
		{"suid keeps nodev", Options{AllowSuid: true}, []string{"ro", "default_permissions", "nodev"}, []string{"nosuid", "dev", "allow_other"}},
		{"devices", Options{AllowDevices: true}, []string{"nosuid"}, []string{"nodev"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := newTestImages(t)
			mnt, _ := mountForTest(t, NewRoot(im.reader, tc.opts), tc.opts)
			opts := mountinfoOptions(t, mnt)
			for _, o := range tc.want {
				if !slices.Contains(opts, o) {
					t.Errorf("mount options %q lack %s", opts, o)
				}
			}
			for _, o := range tc.deny {
				if slices.Contains(opts, o) {
					t.Errorf("mount options %q have %s", opts, o)
				}
			}
		})
	}
}

// mountinfoOptions returns the per-mount and superblock options of the
// mount at mnt.
func mountinfoOptions(t *testing.T, mnt string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 10 || mountinfo.Unescape(fields[4]) != mnt {
			continue
		}
		opts := strings.Split(fields[5], ",")
		return append(opts, strings.Split(fields[len(fields)-1], ",")...)
	}
	t.Fatalf("no mount at %s", mnt)
	return nil
}

func countExplodefsMounts(t *testing.T, mnt string) int {
	t.Helper()
	ms, err := mountinfo.At(mnt)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if isExplodefs(m) {
			n++
		}
	}
	return n
}

func TestIsExplodefs(t *testing.T) {
	if !isExplodefs(mountinfo.Entry{FSType: "fuse", Source: "explodefs"}) ||
		!isExplodefs(mountinfo.Entry{FSType: "fuse.explodefs", Source: "explodefs"}) ||
		isExplodefs(mountinfo.Entry{FSType: "fuse.sshfs", Source: "explodefs"}) {
		t.Error("isExplodefs misjudges the filesystem type")
	}
}
