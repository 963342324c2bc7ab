package fs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxStaleMounts bounds how many stacked mounts clearStaleMount removes
// before it gives up.
const maxStaleMounts = 8

// clearStaleMount detaches what a killed daemon left at mountpoint: a FUSE
// mount whose server is gone ("transport endpoint is not connected"), or
// any explodefs mount still listed there. Detaching is lazy, so processes
// inside an old mount do not block the new one.
func clearStaleMount(mountpoint string, log *slog.Logger) error {
	for range maxStaleMounts {
		reason, err := staleMountReason(mountpoint)
		if err != nil {
			return err
		}
		if reason == "" {
			return nil
		}
		log.Warn("clearing stale mount", "mountpoint", mountpoint, "reason", reason)
		if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("clearing stale mount at %s (%s): %w", mountpoint, reason, err)
		}
	}
	return fmt.Errorf("clearing stale mounts at %s: still mounted after %d unmounts", mountpoint, maxStaleMounts)
}

// staleMountReason says why mountpoint holds a mount to clear, or "" when
// it holds none.
func staleMountReason(mountpoint string) (string, error) {
	var st unix.Stat_t
	switch err := unix.Stat(mountpoint, &st); {
	case errors.Is(err, unix.ENOTCONN):
		return "its FUSE server is gone (ENOTCONN)", nil
	case errors.Is(err, unix.ECONNABORTED):
		return "its FUSE connection was aborted (ECONNABORTED)", nil
	}
	mounted, err := explodefsMountedAt(mountpoint)
	if err != nil {
		return "", err
	}
	if mounted {
		return "an earlier " + fsName + " mount is still there", nil
	}
	return "", nil
}

// explodefsMountedAt reports whether /proc/self/mountinfo lists an
// explodefs mount at mountpoint.
func explodefsMountedAt(mountpoint string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("looking for stale mounts: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfoLine(sc.Text())
		if ok && m.mountpoint == mountpoint && m.isExplodefs() {
			return true, nil
		}
	}
	return false, sc.Err()
}

type mountinfoEntry struct {
	mountpoint, fstype, source string
}

// isExplodefs recognises our mounts whether mount(2) (fuse.explodefs) or a
// fusermount without subtype support (fuse, source explodefs) made them.
func (m mountinfoEntry) isExplodefs() bool {
	return m.fstype == fsType || (m.fstype == "fuse" && m.source == fsName)
}

// parseMountinfoLine reads one line of proc(5)'s mountinfo:
// "id parent maj:min root mountpoint options [optional...] - fstype source superoptions".
func parseMountinfoLine(line string) (mountinfoEntry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(fields) {
		return mountinfoEntry{}, false
	}
	return mountinfoEntry{
		mountpoint: unescapeMountinfo(fields[4]),
		fstype:     fields[sep+1],
		source:     unescapeMountinfo(fields[sep+2]),
	}, true
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo fields.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
