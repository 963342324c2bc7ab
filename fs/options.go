package fs

import (
	"log/slog"
	"time"

	"github.com/explodefs/explodefs/index"
)

// ContentReader reads a layer's uncompressed bytes. The index package's
// lazy reader implements it. Like io.ReaderAt, a short read comes with an
// error.
type ContentReader = index.LayerReader

// ReadObserver hears of every READ of an image file the daemon answers.
type ReadObserver interface {
	// ObserveRead is given the time the daemon spent answering one READ,
	// from handing it to the file to having the reply's bytes; failed
	// reads count too.
	ObserveRead(took time.Duration)
}

// Default cache timeouts. Image content is immutable, so the kernel may keep
// it for long; the catalog moves, so its entries expire quickly even when an
// invalidation is lost.
const (
	DefaultImageTimeout   = time.Hour
	DefaultCatalogTimeout = time.Second
)

// Options configure a Root and its mount.
type Options struct {
	// AllowOther lets users other than the mounting one use the mount; the
	// image's own modes still apply (default_permissions). The zero value
	// is false; DefaultOptions sets it.
	AllowOther bool
	// AllowSuid mounts with suid, for runc running images from the
	// mount. Otherwise the mount is nosuid. Together with AllowOther it
	// lets any local user run the image's setuid binaries as their owner.
	AllowSuid bool
	// AllowDevices mounts with dev, so that device nodes of images open
	// the host's devices. Otherwise the mount is nodev, also with
	// AllowSuid.
	AllowDevices bool
	// ImageTimeout is how long the kernel caches entries and attributes of
	// image content. Zero means DefaultImageTimeout.
	ImageTimeout time.Duration
	// CatalogTimeout is how long the kernel caches namespace and stream
	// directories and tag symlinks. Zero means DefaultCatalogTimeout.
	CatalogTimeout time.Duration
	// Backer gives the local files of materialized images. When it is set
	// and the kernel allows FUSE passthrough (Linux 6.9+, and the daemon
	// has CAP_SYS_ADMIN), an open of an image file that has a backing
	// file passes through to it, and its reads never reach the daemon.
	// Nil serves every read from the layers, and the kernel then opens
	// image files without asking the daemon at all. Only the Options
	// given to NewRoot count.
	Backer Backer
	// Reads, when set, hears how long each READ of an image file took
	// the daemon to answer: lazy reads, since passthrough reads never
	// reach it. It is called on the read path, so it must be cheap.
	// Only the Options given to NewRoot count.
	Reads ReadObserver
	// Logger receives errors that a FUSE reply can only carry as an errno.
	// Nil discards them.
	Logger *slog.Logger
	// Debug logs every FUSE request and reply to Logger at debug level.
	Debug bool
}

// DefaultOptions returns the options a daemon normally mounts with.
func DefaultOptions() Options {
	return Options{
		AllowOther:     true,
		ImageTimeout:   DefaultImageTimeout,
		CatalogTimeout: DefaultCatalogTimeout,
	}
}

// withDefaults fills the zero fields that have a non-zero default.
func (o Options) withDefaults() Options {
	if o.ImageTimeout <= 0 {
		o.ImageTimeout = DefaultImageTimeout
	}
	if o.CatalogTimeout <= 0 {
		o.CatalogTimeout = DefaultCatalogTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
