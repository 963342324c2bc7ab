package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/internal/mountinfo"
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
	ms, err := mountinfo.At(mountpoint)
	if err != nil {
		return false, fmt.Errorf("looking for stale mounts: %w", err)
	}
	return slices.ContainsFunc(ms, isExplodefs), nil
}

// isExplodefs recognises our mounts whether mount(2) (fuse.explodefs) or a
// fusermount without subtype support (fuse, source explodefs) made them.
func isExplodefs(m mountinfo.Entry) bool {
	return m.FSType == fsType || (m.FSType == "fuse" && m.Source == fsName)
}
