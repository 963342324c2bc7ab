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
		if len(fields) < 10 || unescapeMountinfo(fields[4]) != mnt {
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
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if m, ok := parseMountinfoLine(line); ok && m.mountpoint == mnt && m.isExplodefs() {
			n++
		}
	}
	return n
}

func TestParseMountinfoLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want mountinfoEntry
		ok   bool
	}{
		{
			line: `812 29 0:61 / /var/lib/explode\040fs/mnt ro,nosuid,nodev,relatime shared:400 - fuse.explodefs explodefs ro,user_id=0,group_id=0,default_permissions,allow_other`,
			want: mountinfoEntry{mountpoint: "/var/lib/explode fs/mnt", fstype: "fuse.explodefs", source: "explodefs"},
			ok:   true,
		},
		{
			line: `36 35 98:0 /mnt1 /mnt/a\134b rw,noatime master:1 - ext3 /dev/root rw,errors=continue`,
			want: mountinfoEntry{mountpoint: `/mnt/a\b`, fstype: "ext3", source: "/dev/root"},
			ok:   true,
		},
		{line: `garbage`, ok: false},
		{line: `1 2 3:4 / /x rw - fuse`, ok: false},
	} {
		got, ok := parseMountinfoLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountinfoLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
	if !(mountinfoEntry{fstype: "fuse", source: "explodefs"}).isExplodefs() ||
		(mountinfoEntry{fstype: "fuse.sshfs", source: "explodefs"}).isExplodefs() {
		t.Error("isExplodefs misjudges the filesystem type")
	}
}
