package openshift

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/cluster/harness"
)

// daemon is one run of the explodefs binary with its own state directory,
// mountpoint and log file.
type daemon struct {
	cmd    *exec.Cmd
	listen string
	log    string
	done   chan struct{}
	err    error
}

// startDaemon runs bin serve with args (the mountpoint, state and listen
// address are added) and env, and waits until /readyz answers: the mount
// is up and the source's first full scan was delivered. The daemon is
// stopped at the test's cleanup if the test has not stopped it.
//
// The daemon does not materialize images (--materialize=false): these
// figures measure indexing and the lazy read path, and a background OSTree
// commit would compete with both. test/bench has the OSTree figures.
func startDaemon(t testing.TB, bin, dir string, env []string, args ...string) *daemon {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{listen: "127.0.0.1:" + strconv.Itoa(port), log: filepath.Join(dir, "daemon.log"), done: make(chan struct{})}
	for _, sub := range []string{"state", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logFile, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	d.cmd = exec.Command(bin, append([]string{"serve", "--mountpoint", filepath.Join(dir, "mnt"),
		"--state-dir", filepath.Join(dir, "state"), "--listen", d.listen, "--log-level", "info", "--materialize=false"}, args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + d.listen + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited before it was ready: %v; see %s", d.err, d.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("daemon not ready after a minute; see %s", d.log)
	return nil
}

// stop sends SIGTERM, as an orderly shutdown does, and kills the daemon if
// it is still there after 30 s. Stopping twice is harmless.
func (d *daemon) stop(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("daemon did not stop on SIGTERM; see %s", d.log)
	}
}

func (d *daemon) status(t testing.TB) status.Report {
	t.Helper()
	var rep status.Report
	resp, err := http.Get("http://" + d.listen + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// layerPasses counts the daemon's completed layer passes, one log line
// each.
func (d *daemon) layerPasses(t testing.TB) int {
	t.Helper()
	raw, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(raw, []byte(`msg="layer indexed"`))
}

// procMemory is the daemon's resident set now (VmRSS) and at its peak
// (VmHWM).
type procMemory struct{ rss, hwm int64 }

func (m procMemory) String() string {
	return fmt.Sprintf("%.0f MiB (peak %.0f MiB)", float64(m.rss)/(1<<20), float64(m.hwm)/(1<<20))
}

func (d *daemon) memory(t testing.TB) procMemory {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var m procMemory
	fields := map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm}
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, "\t")
		if dst := fields[name]; ok && dst != nil {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			*dst = kb << 10
		}
	}
	return m
}
