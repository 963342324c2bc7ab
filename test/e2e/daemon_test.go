package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/status"
)

// requireHost fails (in CI) or skips (elsewhere) when the machine cannot
// run a real mount.
func requireHost(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (FUSE mounts, device nodes and umoci's xattrs)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse (modprobe fuse)")
	}
	for _, tool := range []string{"umoci", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install umoci util-linux, or run hack/install-deps.sh)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "end-to-end test needs: " + strings.Join(missing, "; ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// buildDaemon compiles the real binary once for the test.
func buildDaemon(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "explodefs")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/explodefs/explodefs/cmd/explodefs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building explodefs: %v\n%s", err, out)
	}
	return bin
}

type daemon struct {
	t      *testing.T
	bin    string
	args   []string
	env    []string // added to the test's environment
	listen string
	log    string
	cmd    *exec.Cmd
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newDaemon(t *testing.T, bin, src, mnt, state string) *daemon {
	listen := freePort(t)
	d := &daemon{t: t, bin: bin, listen: listen, log: filepath.Join(state, "..", "daemon.log"),
		args: []string{"serve", "--source", "oci-dir:" + src, "--mountpoint", mnt, "--state-dir", state,
			"--listen", listen, "--resync", "2s"}}
	t.Cleanup(func() {
		if d.cmd != nil && d.cmd.ProcessState == nil {
			d.stop(syscall.SIGTERM)
		}
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		if t.Failed() {
			if raw, err := os.ReadFile(d.log); err == nil {
				lines := strings.Split(string(raw), "\n")
				t.Logf("daemon log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	d.cmd = exec.Command(d.bin, d.args...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + d.listen + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatal("daemon not ready after 30s")
}

func (d *daemon) stop(sig syscall.Signal) {
	d.t.Helper()
	_ = d.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		d.t.Errorf("daemon did not exit on %v", sig)
	}
}

func (d *daemon) status() status.Report {
	d.t.Helper()
	resp, err := http.Get("http://" + d.listen + "/status")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep status.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		d.t.Fatal(err)
	}
	return rep
}

// image returns the status of the image a ref (ns/stream:tag) names.
func (d *daemon) image(ref string) (status.Image, bool) {
	for _, img := range d.status().Images {
		for _, r := range img.Refs {
			if r == ref {
				return img, true
			}
		}
	}
	return status.Image{}, false
}

// settle waits until every ref has an image that is ready or failed.
func (d *daemon) settle(refs []string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var waiting []string
		for _, ref := range refs {
			img, ok := d.image(ref)
			if !ok || (img.State != status.Ready && img.State != status.Failed) {
				waiting = append(waiting, fmt.Sprintf("%s (%v)", ref, img.State))
			}
		}
		if len(waiting) == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("images not settled after %v: %s", timeout, strings.Join(waiting, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting until %s", timeout, what)
}

// runAs runs a command as uid (and gid) with no supplementary groups.
func runAs(uid int, name string, args ...string) ([]byte, error) {
	id := fmt.Sprint(uid)
	full := append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", name}, args...)
	return exec.Command("setpriv", full...).CombinedOutput()
}
