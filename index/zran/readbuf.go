package zran

// Reads smaller than directReadMin are served from an internal buffer: every
// inflate call costs a cgo transition and zlib copies up to 32 KiB of each
// call's output into its window, so inflating a few bytes at a time (as
// archive/tar's 512-byte header reads would) is several times slower than
// inflating big chunks and copying them out.
const directReadMin = 64 << 10

// stepper advances a decompressor by one step, inflating into dst when it
// is inside a member. It returns io.EOF at the end of the stream.
type stepper interface {
	step(dst []byte) (int, error)
}

// readBuf implements Read for the Indexer and NewReader's reader.
type readBuf struct {
	size int // of buf, allocated on the first small read
	// direct is the smallest read inflated straight into the caller's
	// buffer; directReadMin when zero.
	direct  int
	buf     []byte
	pending []byte // inflated but not yet returned; a suffix of buf
	err     error  // sticky: io.EOF at the end, or the first failure
}

func (b *readBuf) read(p []byte, s stepper) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if len(b.pending) > 0 {
			k := copy(p[n:], b.pending)
			b.pending = b.pending[k:]
			n += k
			continue
		}
		if b.err != nil {
			break
		}
		var m int
		if len(p)-n >= b.directMin() {
			m, b.err = s.step(p[n:])
			n += m
			continue
		}
		if b.buf == nil {
			b.buf = make([]byte, b.size)
		}
		m, b.err = s.step(b.buf)
		b.pending = b.buf[:m]
	}
	if n > 0 {
		// An error stays sticky for the next call.
		return n, nil
	}
	return 0, b.err
}

func (b *readBuf) directMin() int {
	if b.direct > 0 {
		return b.direct
	}
	return directReadMin
}
