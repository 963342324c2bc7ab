package index

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// DefaultMaxLayerSize bounds a layer's uncompressed size when
// PassOptions.MaxLayerSize is zero. It is far above real layers (a few
// GiB at most) and still stops a small crafted blob from writing without
// end into the state directory or keeping a pass busy for hours.
const DefaultMaxLayerSize = 64 << 30

// DefaultMaxZstdWindow bounds the history a zstd frame may make the
// decoder keep, when PassOptions.MaxZstdWindow is zero. The decoder holds
// that much memory per pass, so a 23 KiB blob declaring a 512 MiB window
// and filling it costs 512 MiB of RSS without a bound. RFC 8878 asks
// encoders not to exceed 8 MiB, and that is what real layers use:
// `zstd -19` (the highest level without --ultra), buildkit, podman and
// containers/image (klauspost/compress, 8 MiB at most by default) all
// write windows of 8 MiB or less. Only `zstd --long` (128 MiB) and
// `zstd --ultra -20..-22` (32 to 128 MiB) go beyond; those layers are
// refused with a reason that says so, and a deployment that needs them
// can raise the bound.
const DefaultMaxZstdWindow = 8 << 20

// ErrLayerTooLarge reports a layer whose uncompressed stream is larger
// than PassOptions.MaxLayerSize.
var ErrLayerTooLarge = errors.New("layer is larger than the configured maximum")

// ErrZstdWindowTooLarge reports a zstd frame that needs a larger decoder
// window than PassOptions.MaxZstdWindow.
var ErrZstdWindowTooLarge = errors.New("zstd frame needs a decoder window larger than the configured maximum")

func (o PassOptions) maxLayerSize() int64 {
	if o.MaxLayerSize > 0 {
		return o.MaxLayerSize
	}
	return DefaultMaxLayerSize
}

func (o PassOptions) maxZstdWindow() int64 {
	if o.MaxZstdWindow > 0 {
		return o.MaxZstdWindow
	}
	return DefaultMaxZstdWindow
}

// recordFault keeps the first failure found below the tar reader: a full
// state directory, a write error of the index or of the zstd copy, or a
// limit the stream crossed. Such failures reach readTar as read errors of
// the stream and would be reported as faults of the entry being read;
// explain reports them as what they are. It returns err.
func (p *pass) recordFault(err error) error {
	if p.fault == nil {
		p.fault = err
	}
	return err
}

// explain returns the recorded fault that caused err, or err.
func (p *pass) explain(err error) error {
	if p.fault != nil {
		return p.fault
	}
	return err
}

// sizeLimiter fails the stream once it yields more than max bytes.
type sizeLimiter struct {
	p   *pass
	r   io.Reader
	n   int64
	max int64
}

func (l *sizeLimiter) Read(b []byte) (int, error) {
	if l.n > l.max {
		return 0, l.tooLarge()
	}
	n, err := l.r.Read(b)
	l.n += int64(n)
	if l.n > l.max {
		return n - int(l.n-l.max), l.tooLarge()
	}
	return n, err
}

func (l *sizeLimiter) tooLarge() error {
	return l.p.recordFault(l.p.fail(fmt.Errorf("%w: more than %d bytes uncompressed (the limit is %s)", ErrLayerTooLarge, l.max, mib(l.max))))
}

// zstdLimits reports a frame that needs too large a window as such; the
// decoder itself says only "window size exceeded" or "decompressed size
// exceeds configured limit" (for single-segment frames, whose window is
// their declared content size).
type zstdLimits struct {
	p      *pass
	dec    *zstd.Decoder
	window int64
}

func (z *zstdLimits) Read(b []byte) (int, error) {
	n, err := z.dec.Read(b)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		what := "a frame of the layer"
		// The blob's first frame header names the window it declares;
		// reading it again costs nothing next to the pass.
		head := make([]byte, zstd.HeaderMaxSize)
		n, _ := z.p.blob.ReadAt(head, 0)
		var h zstd.Header
		if h.Decode(head[:n]) == nil && h.WindowSize > uint64(z.window) {
			what = fmt.Sprintf("the first frame declares a window of %s, and", mib(int64(h.WindowSize)))
		}
		err = z.p.recordFault(z.p.fail(fmt.Errorf("%w: %s needs more than %s (compressors write 8 MiB or less unless told --long or --ultra)", ErrZstdWindowTooLarge, what, mib(z.window))))
	}
	return n, err
}

// faultWriter records the first write error of a destination that a
// TeeReader feeds, so that it is reported as a failure of the state
// directory rather than as a read error of the layer. check, when set,
// runs every spaceCheckBytes written and fails the write likewise.
type faultWriter struct {
	p         *pass
	w         io.Writer
	what      string
	check     func() error
	unchecked int
}

// spaceCheckBytes is how much of a zstd copy is written between two
// checks of the free space; statfs costs a microsecond or two.
const spaceCheckBytes = 4 << 20

func (f *faultWriter) Write(b []byte) (int, error) {
	if f.check != nil {
		if f.unchecked += len(b); f.unchecked >= spaceCheckBytes {
			f.unchecked = 0
			if err := f.check(); err != nil {
				return 0, f.p.recordFault(f.p.storeFail(fmt.Errorf("writing %s: %w", f.what, err)))
			}
		}
	}
	n, err := f.w.Write(b)
	if err != nil {
		return n, f.p.recordFault(f.p.storeFail(fmt.Errorf("writing %s: %w", f.what, err)))
	}
	return n, nil
}

// DefaultMinFreeSpace is the free space a zstd copy leaves in the state
// directory when PassOptions.MinFreeSpace is zero. It is above what the
// Badger store keeps free for itself (160 MiB by default), so that a
// large copy stops before the index runs short.
const DefaultMinFreeSpace = 256 << 20

// checkCacheSpace fails with an error wrapping ENOSPC when the cache
// directory's filesystem has less free space than the pass must leave.
func (p *pass) checkCacheSpace() error {
	need := p.opts.MinFreeSpace
	if need <= 0 {
		need = DefaultMinFreeSpace
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.opts.CacheDir, &st); err != nil {
		return fmt.Errorf("checking the free space of %s: %w", p.opts.CacheDir, err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%s has %s free, less than the %s a decompressed copy leaves for the index: %w", p.opts.CacheDir, mib(free&^(1<<20-1)), mib(need), syscall.ENOSPC)
	}
	return nil
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
