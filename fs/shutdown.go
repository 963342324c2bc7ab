package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Unmount ends the mount that server serves at mountpoint within about
// timeout. It tries a normal unmount first. When processes keep files of
// the mount open, that fails (EBUSY) for as long as they do, so Unmount
// names them in the log and detaches the mount lazily: the mountpoint is
// free for the next daemon at once, and the kernel ends the old connection
// once the last of those files is closed or this process exits.
func Unmount(server *fuse.Server, mountpoint string, timeout time.Duration, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mountpoint, err := canonicalMountpoint(mountpoint)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- server.Unmount() }()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case err = <-done:
		if err == nil {
			return nil
		}
	case <-deadline.C:
		err = fmt.Errorf("unmount did not finish within %s", timeout)
	}
	holders := openFilesUnder(mountpoint, maxHoldersLogged)
	log.Warn("mount is busy; detaching it lazily", "mountpoint", mountpoint, "err", err, "open", strings.Join(holders, "; "))
	if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("detaching the mount at %s: %w", mountpoint, err)
	}
	return nil
}

// maxHoldersLogged bounds what a busy unmount logs.
const maxHoldersLogged = 20

// openFilesUnder lists, as "pid (command): path", up to limit open files,
// working directories and roots of processes that lie below dir.
func openFilesUnder(dir string, limit int) []string {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return []string{"cannot list processes: " + err.Error()}
	}
	var out []string
	add := func(pid, link string) {
		target, err := os.Readlink(link)
		if err != nil || (target != dir && !strings.HasPrefix(target, dir+"/")) {
			return
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		out = append(out, fmt.Sprintf("%s (%s): %s", pid, strings.TrimSpace(string(comm)), target))
	}
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		add(pid, filepath.Join("/proc", pid, "cwd"))
		add(pid, filepath.Join("/proc", pid, "root"))
		fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		for _, fd := range fds {
			if len(out) >= limit {
				return append(out, "…")
			}
			add(pid, filepath.Join("/proc", pid, "fd", fd.Name()))
		}
	}
	return out
}
