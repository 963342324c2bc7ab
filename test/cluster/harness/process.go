package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a server the test started. It is killed at the test's
// cleanup at the latest, and, through the parent-death signal, when the
// test binary itself dies, so no run leaves servers behind.
type Process struct {
	// Name says which server this is in errors and logs.
	Name string
	// LogPath is the file that receives the server's stdout and stderr.
	LogPath string

	cmd      *exec.Cmd
	done     chan struct{}
	err      error // set before done is closed
	stopOnce sync.Once
}

// StartProcess runs path with args, its output appended to logPath. The
// test's cleanup kills it and, if the test failed, logs the end of its
// output, which is usually where the reason is.
func StartProcess(t testing.TB, name, logPath, path string, args ...string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer log.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s (pid %d) log, last lines:\n%s", name, cmd.Process.Pid, p.LogTail(40))
		}
	})
	return p, nil
}

// Pid is the server's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the server has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop kills the server's process group at once, as a crash would, and
// waits until it is gone. Tests want the abrupt kind: watches are cut
// mid-stream, with no goodbye. Stopping twice is harmless.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

// LogTail returns the last n lines the server wrote.
func (p *Process) LogTail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// WaitReady polls ready every 50 ms until it succeeds. It gives up when
// the server exits (saying how, with the end of its log) or when ctx ends
// (with the last answer of ready).
func (p *Process) WaitReady(ctx context.Context, ready func(context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.Name, p.err, p.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", p.Name, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// LookPath finds an executable like exec.LookPath, with an error a skip
// message can show as is.
func LookPath(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH", name)
	}
	return path, nil
}
