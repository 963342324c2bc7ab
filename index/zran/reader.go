package zran

import (
	"errors"
	"fmt"
	"io"
)

// readerInputSize bounds how much compressed data one ReadAt fetches; a
// random read usually inflates well under a span, so bigger buffers would
// mostly fetch bytes nobody needs from a local file.
const readerInputSize = 64 << 10

// maxReaderInputSize bounds what NewReaderSize accepts: the buffer lives
// as long as the reader.
const maxReaderInputSize = 1 << 20

// readerOutputSize is the buffer for reads smaller than directReadMin, such as
// the ones io.CopyN(io.Discard, ...) makes to skip from a checkpoint to the
// wanted offset.
const readerOutputSize = 128 << 10

// gzipTrailerSize is the CRC-32 and ISIZE that follow each member's deflate
// data.
const gzipTrailerSize = 8

// NewReader returns a reader of the uncompressed stream starting at
// checkpoint c, reading compressed bytes from blob (blobSize bytes long)
// from c.In, or c.In-1 when c.Bits is not 0. It continues across gzip member
// boundaries until the blob ends. Bytes after the last member that do not
// start another member end the stream quietly, as gzip(1) does with padding.
//
// The reader checks the CRCs of members it starts from their header, but not
// of the member it resumes in the middle of; callers that need integrity
// verify the output themselves. It never loops forever on garbage: each
// step consumes input, produces output or fails. Close frees the inflate
// state.
func NewReader(blob io.ReaderAt, blobSize int64, c Checkpoint) (io.ReadCloser, error) {
	return NewReaderSize(blob, blobSize, c, readerInputSize)
}

// NewReaderSize is NewReader with compressed input fetched inputSize
// bytes at a time (64 KiB to 1 MiB). Blobs for which every read costs a
// round trip (a registry over HTTP) want the bigger pieces: one read then
// usually holds all the input a random read inflates.
func NewReaderSize(blob io.ReaderAt, blobSize int64, c Checkpoint, inputSize int) (io.ReadCloser, error) {
	inputSize = min(max(inputSize, readerInputSize), maxReaderInputSize)
	switch {
	case c.Out < 0 || c.In < 0 || c.In > blobSize:
		return nil, fmt.Errorf("zran: checkpoint at compressed offset %d is outside the %d byte blob", c.In, blobSize)
	case c.Bits > 7:
		return nil, fmt.Errorf("zran: checkpoint at compressed offset %d has %d bits, want 0..7", c.In, c.Bits)
	case c.Bits != 0 && c.In == 0:
		return nil, fmt.Errorf("zran: checkpoint at compressed offset 0 cannot have %d pending bits", c.Bits)
	case len(c.Window) > WindowSize:
		return nil, fmt.Errorf("zran: checkpoint at compressed offset %d has a %d byte window, more than %d", c.In, len(c.Window), WindowSize)
	case c.MemberStart && (c.Bits != 0 || len(c.Window) != 0):
		return nil, fmt.Errorf("zran: member-start checkpoint at compressed offset %d has bits or a window", c.In)
	}
	r := &reader{blob: blob, size: blobSize, pos: c.In, inPos: c.In, first: c.MemberStart,
		// Span readers ask for whole verification chunks, never for tar
		// headers, so buffering would only add a copy.
		rb: readBuf{size: readerOutputSize, direct: 4 << 10}}
	if c.MemberStart {
		z, err := newZlibInflater(inputSize)
		if err != nil {
			return nil, err
		}
		r.z, r.state = z, stateBetween
		return r, nil
	}
	z, err := newIstream(inputSize)
	if err != nil {
		return nil, err
	}
	r.z, r.state, r.raw = z, stateMember, true
	if c.Bits != 0 {
		// The checkpoint's pending bits are in the byte before c.In. It
		// is fetched with the first input rather than on its own: for a
		// blob read over HTTP every read is a round trip.
		r.pos = c.In - 1
		if err := r.fill(); err != nil {
			z.free()
			return nil, fmt.Errorf("zran: reading checkpoint byte at compressed offset %d: %w", c.In-1, err)
		}
		z.prime(int(c.Bits), z.in[0]>>(8-c.Bits))
		// Drop the byte from the input: inflate starts at c.In.
		copy(z.in, z.in[1:r.inLen])
		r.inPos, r.inLen = c.In, r.inLen-1
		z.setInput(r.inLen)
	}
	if len(c.Window) > 0 {
		if err := z.setDictionary(c.Window); err != nil {
			z.free()
			return nil, fmt.Errorf("%w at compressed offset %d", err, c.In)
		}
	}
	return r, nil
}

// inflater is what a reader inflates with: ISA-L from a checkpoint inside
// a member, zlib from a member's start.
type inflater interface {
	// input is the input buffer, C memory.
	input() []byte
	setInput(n int)
	availIn() int
	skip(n int)
	// inflate returns how many bytes it wrote to out and a zlib return
	// code.
	inflate(out []byte) (int, int)
	// unusedBytes is how many bytes of input the inflater took beyond
	// the end of the deflate data it just finished.
	unusedBytes() int
	msg(ret int) string
	free()
}

// zlibInflater is a zstream as an inflater.
type zlibInflater struct{ *zstream }

func newZlibInflater(inSize int) (*zlibInflater, error) {
	z, err := newZstream(inSize, wbitsGzip)
	if err != nil {
		return nil, err
	}
	return &zlibInflater{z}, nil
}

func (z *zlibInflater) input() []byte { return z.in }

func (z *zlibInflater) inflate(out []byte) (int, int) { return z.zstream.inflate(out, zNoFlush) }

// zlib never takes input past the end of the deflate data.
func (z *zlibInflater) unusedBytes() int { return 0 }

type reader struct {
	blob io.ReaderAt
	size int64
	z    inflater

	state   streamState // stateBetween, stateMember or stateTrailer
	raw     bool        // inflating raw deflate: the trailer is ours to skip
	first   bool        // the first member must be there
	trailer int         // trailer bytes still to skip
	pos     int64       // blob offset of the next byte to fetch
	inPos   int64       // blob offset of z.in[0]
	inLen   int         // valid bytes in z.in
	rb      readBuf
}

var errReaderClosed = errors.New("zran: reader is closed")

func (r *reader) Read(p []byte) (int, error) {
	return r.rb.read(p, r)
}

func (r *reader) step(dst []byte) (int, error) {
	switch r.state {
	case stateMember:
		return r.inflate(dst)
	case stateBetween:
		return 0, r.nextMember()
	default:
		return 0, r.skipTrailer()
	}
}

func (r *reader) Close() error {
	if r.z != nil {
		r.z.free()
		r.z = nil
	}
	r.rb.pending = nil
	r.rb.err = errReaderClosed
	return nil
}

func (r *reader) consumed() int64 {
	return r.inPos + int64(r.inLen-r.z.availIn())
}

// fill fetches the next chunk of the blob into the (fully consumed) input
// buffer. At the end of the blob it leaves the buffer empty and returns nil.
func (r *reader) fill() error {
	r.inPos = r.pos
	r.inLen = 0
	r.z.setInput(0)
	want := min(int64(len(r.z.input())), r.size-r.pos)
	if want <= 0 {
		return nil
	}
	n, err := r.blob.ReadAt(r.z.input()[:want], r.pos)
	if n == 0 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("zran: reading blob at compressed offset %d: %w", r.pos, err)
	}
	r.pos += int64(n)
	r.inLen = n
	r.z.setInput(n)
	return nil
}

func (r *reader) atEnd() bool { return r.z.availIn() == 0 && r.pos >= r.size }

func (r *reader) inflate(p []byte) (int, error) {
	if r.z.availIn() == 0 && r.pos < r.size {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n, ret := r.z.inflate(p)
	switch ret {
	case zOK:
		return n, nil
	case zStreamEnd:
		r.giveBack(r.z.unusedBytes())
		if r.raw {
			r.state, r.trailer = stateTrailer, gzipTrailerSize
		} else {
			r.state = stateBetween
		}
		return n, nil
	case zBufError:
		if r.atEnd() {
			return n, fmt.Errorf("zran: gzip stream truncated at compressed offset %d: %w", r.consumed(), io.ErrUnexpectedEOF)
		}
		if r.z.availIn() != 0 {
			return n, fmt.Errorf("zran: inflate made no progress at compressed offset %d", r.consumed())
		}
		return n, nil
	default:
		return n, fmt.Errorf("zran: corrupt gzip data at compressed offset %d: %s", r.consumed(), r.z.msg(ret))
	}
}

// giveBack returns n bytes that the inflater read ahead past the end of
// a member's deflate data (or of the member) to the pending input, from
// the blob if the input buffer no longer holds them.
func (r *reader) giveBack(n int) {
	if n == 0 {
		return
	}
	if used := r.inLen - r.z.availIn(); n <= used {
		r.z.skip(-n)
		return
	}
	r.pos = r.consumed() - int64(n)
	r.inPos, r.inLen = r.pos, 0
	r.z.setInput(0)
}

// nextGzipMember readies the inflater for a gzip member that starts at
// the pending input. ISA-L inflated the raw deflate data of the member
// the reader started in; zlib checks gzip headers and trailers, so it
// takes over, with the pending input.
func (r *reader) nextGzipMember() error {
	if z, ok := r.z.(*zlibInflater); ok {
		return z.reset(wbitsGzip)
	}
	z, err := newZlibInflater(len(r.z.input()))
	if err != nil {
		return err
	}
	pending := r.z.input()[r.inLen-r.z.availIn() : r.inLen]
	r.inPos, r.inLen = r.consumed(), copy(z.in, pending)
	z.setInput(r.inLen)
	r.z.free()
	r.z = z
	return nil
}

// skipTrailer passes over the trailer of the member that was inflated raw.
func (r *reader) skipTrailer() error {
	if r.z.availIn() == 0 {
		if r.pos >= r.size {
			return fmt.Errorf("zran: gzip trailer truncated at compressed offset %d: %w", r.consumed(), io.ErrUnexpectedEOF)
		}
		return r.fill()
	}
	k := min(r.trailer, r.z.availIn())
	r.z.skip(k)
	r.trailer -= k
	if r.trailer == 0 {
		r.state = stateBetween
	}
	return nil
}

func (r *reader) nextMember() error {
	if r.z.availIn() == 0 {
		if r.pos >= r.size {
			if r.first {
				return fmt.Errorf("zran: no gzip member at compressed offset %d: %w", r.consumed(), io.ErrUnexpectedEOF)
			}
			return io.EOF
		}
		return r.fill()
	}
	if r.z.input()[r.inLen-r.z.availIn()] != 0x1f && !r.first {
		// Padding or garbage after the last member; the Indexer has
		// already judged it.
		return io.EOF
	}
	if !r.first {
		if err := r.nextGzipMember(); err != nil {
			return err
		}
	}
	r.first, r.raw, r.state = false, false, stateMember
	return nil
}
