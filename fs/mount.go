package fs

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Identity of the mount as /proc/self/mountinfo and df show it; a stale
// mount is recognised by it too.
const (
	fsName = "explodefs"
	fsType = "fuse." + fsName
)

// maxRequest is the largest FUSE request this kernel allows (max_pages_limit
// 256 × 4 KiB). Reads this large save round trips on sequential reads.
const maxRequest = 1 << 20

// Mount clears a stale mount at mountpoint, mounts root there read-only and
// starts serving it. Stop serving with the server's Unmount.
//
// opts decides how to mount (AllowOther, AllowSuid, AllowDevices, Debug) and where mount
// messages go; the Options given to NewRoot decide the cache timeouts. After
// a Root is mounted again, its catalog changes invalidate the new mount.
func Mount(mountpoint string, root *Root, opts Options) (*fuse.Server, error) {
	opts = opts.withDefaults()
	mountpoint, err := canonicalMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := clearStaleMount(mountpoint, opts.Logger); err != nil {
		return nil, err
	}
	node := &rootNode{root: root}
	server, err := mountImages(mountpoint, node, root, gofsOptions(root, opts))
	if err != nil {
		return nil, fmt.Errorf("mounting %s at %s: %w", fsName, mountpoint, err)
	}
	root.mounted.Store(node)
	return server, nil
}

func gofsOptions(root *Root, opts Options) *gofs.Options {
	// Misses inside images are cached as long as their hits; the catalog
	// opts out per lookup (see Root.catalogMiss).
	negativeTimeout := root.opts.ImageTimeout
	return &gofs.Options{
		MountOptions:    mountOptions(opts),
		NegativeTimeout: &negativeTimeout,
		// Report modes exactly: go-fuse would otherwise turn a 0000
		// file into 0644.
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: rootIno},
		Logger:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
}

func mountOptions(opts Options) fuse.MountOptions {
	flags := uintptr(syscall.MS_RDONLY)
	// Both the option words (for fusermount) and the flags (for a direct
	// mount) are set; go-fuse passes each to the path that needs it.
	words := []string{"ro", "default_permissions"}
	if opts.AllowSuid {
		words = append(words, "suid")
	} else {
		flags |= syscall.MS_NOSUID
		words = append(words, "nosuid")
	}
	if opts.AllowDevices {
		words = append(words, "dev")
	} else {
		flags |= syscall.MS_NODEV
		words = append(words, "nodev")
	}
	return fuse.MountOptions{
		AllowOther: opts.AllowOther,
		Options:    words,
		FsName:     fsName,
		Name:       fsName,
		// fusermount may be missing; as root the mount(2) call works.
		DirectMount:      true,
		DirectMountFlags: flags,
		MaxWrite:         maxRequest,
		MaxReadAhead:     maxRequest,
		// Image symlinks never change, and a moved tag is a new inode.
		EnableSymlinkCaching: true,
		Debug:                opts.Debug,
		Logger:               slog.NewLogLogger(opts.Logger.Handler(), fuseLogLevel(opts.Debug)),
	}
}

// fuseLogLevel is the level of go-fuse's own messages: with Debug they are
// the request trace, otherwise only trouble with the kernel connection.
func fuseLogLevel(debug bool) slog.Level {
	if debug {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// canonicalMountpoint makes mountpoint absolute and resolves symlinks in
// its parent, so that it compares equal to what mountinfo lists. The last
// component is left alone: a stale mount there cannot be resolved.
func canonicalMountpoint(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}
