package fs

import (
	"context"
	"os"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Backer gives the local file that holds an image file's bytes once the
// image has been materialized, so that reads of it pass through to that file
// in the kernel.
type Backer interface {
	// Backing returns an open read-only file holding exactly the bytes of
	// inode ino of the image with manifest digest image, or (nil, nil)
	// when there is none yet. The caller owns (closes) the file.
	Backing(ctx context.Context, image digest.Digest, view *index.View, ino index.Ino) (*os.File, error)
}

// Stats counts how the mount served image files since NewRoot, across
// mounts of the Root.
type Stats struct {
	// Reads is the number of READ requests for image files the daemon
	// answered: reads that neither the kernel's page cache nor a backing
	// file could serve.
	Reads uint64
	// LazyOpens is the number of opens of image files answered for reads
	// through the daemon. The kernel asks only while image files may pass
	// through (see Root.Passthrough); otherwise it opens them without
	// asking and this stays 0.
	LazyOpens uint64
	// PassthroughOpens is the number of opens of image files answered in
	// passthrough mode: their reads never reach the daemon.
	PassthroughOpens uint64
	// BackingFiles is the number of backing files registered with the
	// kernel now: one per image file that is open in passthrough mode,
	// however many times it is open.
	BackingFiles int64
}

// counters are the atomics behind Stats, shared by the Root and the
// imageFS of its mount.
type counters struct {
	reads            atomic.Uint64
	lazyOpens        atomic.Uint64
	passthroughOpens atomic.Uint64
	backingFiles     atomic.Int64
}

// Stats returns how image files were served so far. It is cheap: a few
// atomic loads.
func (r *Root) Stats() Stats {
	return Stats{
		Reads:            r.stats.reads.Load(),
		LazyOpens:        r.stats.lazyOpens.Load(),
		PassthroughOpens: r.stats.passthroughOpens.Load(),
		BackingFiles:     r.stats.backingFiles.Load(),
	}
}

// Passthrough reports whether the current (or last) mount of r passes
// reads of materialized image files through to their backing files: a
// Backer is configured, the kernel granted FUSE passthrough and lets the
// daemon register backing files. It is false before the first Mount.
func (r *Root) Passthrough() bool { return r.passthrough.Load() }
