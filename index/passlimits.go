package index

import (
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
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
	n, err := l.r.Read(b)
	l.n += int64(n)
	if l.n > l.max {
		return n - int(l.n-l.max), l.p.recordFault(l.p.fail(fmt.Errorf("%w: more than %d bytes uncompressed (the limit is %s)", ErrLayerTooLarge, l.max, mib(l.max))))
	}
	return n, err
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
// directory rather than as a read error of the layer.
type faultWriter struct {
	p    *pass
	w    io.Writer
	what string
}

func (f *faultWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err != nil {
		return n, f.p.recordFault(f.p.storeFail(fmt.Errorf("writing %s: %w", f.what, err)))
	}
	return n, nil
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
