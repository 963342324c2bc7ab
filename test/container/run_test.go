package container

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/internal/mountinfo"
	"github.com/explodefs/explodefs/test/cluster/harness"
)

// goBin is where hack/install-go.sh puts the toolchain; it is added to the
// PATH of every command, as the Makefile does.
const goBin = "/usr/local/go/bin"

// requireHost fails (under CI) or skips (elsewhere) when the machine
// cannot build and run the image.
func requireHost(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse (modprobe fuse)")
	}
	if _, err := os.Stat(runcPath); err != nil {
		missing = append(missing, runcPath)
	}
	for _, tool := range []string{"podman", "debootstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		harness.Require(t, fmt.Errorf("cannot build and run the container image, missing: %s", strings.Join(missing, ", ")),
			"run hack/install-deps.sh, or apt-get install podman runc debootstrap, as root")
	}
}

// repoRoot is the module root: go test runs in the package directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at the module root %s: %v", root, err)
	}
	return root
}

// command runs name in dir with a deadline. A script's children (apt,
// debootstrap, podman) share its process group, so a timeout ends all of
// them.
func command(timeout time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PATH="+goBin+":"+os.Getenv("PATH")), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A daemon a command forked (podman's conmon) must not keep the
	// output pipe, and so this call, open.
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// mustRun is command that fails the test with the end of the output.
func mustRun(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(timeout, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(out, 60))
	}
	return out
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// goTool is the go command the Makefile uses.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(goBin, "go")
}

// fuseMountAt is the FUSE mount at path, if this namespace sees one.
func fuseMountAt(path string) (mountinfo.Entry, bool, error) {
	ms, err := mountinfo.At(path)
	if err != nil {
		return mountinfo.Entry{}, false, err
	}
	for _, m := range ms {
		if m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") {
			return m, true, nil
		}
	}
	return mountinfo.Entry{}, false, nil
}

// sharedBindMount makes dir a mount point of its own with shared
// propagation, so that mounts made below it in a container with rshared
// propagation show on the host; the test's cleanup takes it (and anything
// left on it) away again.
func sharedBindMount(t *testing.T, dir string) {
	t.Helper()
	mustRun(t, time.Minute, "/", nil, "mount", "--bind", dir, dir)
	t.Cleanup(func() {
		for range 5 {
			ms, err := mountinfo.At(dir)
			if err != nil || len(ms) == 0 {
				return
			}
			if out, err := command(time.Minute, "/", nil, "umount", "-l", dir); err != nil {
				t.Errorf("cleanup: %v: %s", err, out)
				return
			}
		}
	})
	mustRun(t, time.Minute, "/", nil, "mount", "--make-rshared", dir)
}

// waitFor polls cond until it holds, fails, or timeout passes; what is
// the last reason cond gave for not holding yet.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %v", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
