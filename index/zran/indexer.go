package zran

import (
	"errors"
	"fmt"
	"io"
)

// Big buffers keep refills, the reads from r they cause, and cgo calls rare
// next to inflate work.
const (
	indexerInputSize  = 256 << 10
	indexerOutputSize = 256 << 10 // for reads smaller than directReadMin
)

// Indexer inflates a gzip stream (one or more gzip members back to back)
// read sequentially from r, exposes the uncompressed bytes through Read, and
// calls onCheckpoint for each checkpoint.
//
// Checkpoints are chosen so that consecutive ones are at most spacing bytes
// of output apart, unless a single deflate block is longer than that:
//   - the first is at Out 0, on the first member header;
//   - inside a member, only deflate block boundaries qualify. Each boundary
//     becomes the candidate; when the next boundary would be more than spacing
//     past the last checkpoint, the candidate is emitted. A boundary that is
//     itself more than spacing past the last checkpoint (after a block longer
//     than spacing) is emitted whatever comes next;
//   - a later member's start becomes the candidate too, and is emitted
//     whatever comes next when at least spacing/4 bytes were produced since
//     the last checkpoint: it costs no window;
//   - the end of the stream counts as a boundary, so the last span obeys the
//     limit too, but no checkpoint is placed there.
//
// onCheckpoint runs from within Read, with no fixed relation to the bytes
// Read has returned so far: a candidate is only emitted on reaching a later
// boundary, and small reads are served from output inflated ahead.
// Checkpoints arrive in increasing Out order, and all of them have arrived
// before Read returns io.EOF.
//
// After a member, only another member or zero bytes up to the end may
// follow: gzip(1) tolerates zero padding, so it is skipped, and any other
// trailing data is an error.
//
// An Indexer is not safe for concurrent use. Close must be called to free
// the zlib state, which lives outside the Go heap.
type Indexer struct {
	r            io.Reader
	spacing      int64
	onCheckpoint func(Checkpoint) error
	z            *zstream

	state   streamState
	inEOF   bool  // r has reported io.EOF
	inPos   int64 // blob offset of z.in[0]
	inLen   int   // valid bytes in z.in
	out     int64 // uncompressed bytes produced so far
	members int   // gzip members started so far
	emitted int   // checkpoints emitted so far
	lastOut int64 // Out of the last emitted checkpoint

	// The candidate is the most recent boundary that may still be emitted.
	haveCand bool
	cand     Checkpoint // Window unset; candWin holds it
	candWin  []byte     // WindowSize bytes, reused for every candidate
	candLen  int
	candDue  bool // emit at the next boundary whatever the spacing

	rb readBuf
}

// streamState says where in the blob a decompressor is, between inflate
// steps.
type streamState int

const (
	stateBetween streamState = iota // before a member header, or at the end
	stateMember                     // inside a member
	statePadding                    // in zero padding after the last member
	stateTrailer                    // NewReader only: skipping a member's trailer
)

// NewIndexer returns an Indexer that reads the gzip stream from r and places
// checkpoints at most spacing uncompressed bytes apart where the deflate
// blocks allow it. onCheckpoint may be nil; an error it returns stops the
// Indexer and is returned, wrapped, by Read.
func NewIndexer(r io.Reader, spacing int64, onCheckpoint func(Checkpoint) error) (*Indexer, error) {
	if spacing <= 0 {
		return nil, fmt.Errorf("zran: checkpoint spacing %d is not positive", spacing)
	}
	if onCheckpoint == nil {
		onCheckpoint = func(Checkpoint) error { return nil }
	}
	z, err := newZstream(indexerInputSize, wbitsGzip)
	if err != nil {
		return nil, err
	}
	return &Indexer{
		r:            r,
		spacing:      spacing,
		onCheckpoint: onCheckpoint,
		z:            z,
		candWin:      make([]byte, WindowSize),
		rb:           readBuf{size: indexerOutputSize},
	}, nil
}

// CompressedBytesRead returns how many bytes of the compressed stream the
// decompressor has consumed: the blob offset it has reached. Bytes read from
// r but still buffered are not counted. After Read returned io.EOF it is the
// size of the whole blob, zero padding included.
func (x *Indexer) CompressedBytesRead() int64 {
	if x.z == nil {
		return x.inPos + int64(x.inLen)
	}
	return x.consumed()
}

// Close frees the zlib state. It is safe to call more than once; Read fails
// after Close.
func (x *Indexer) Close() error {
	if x.z != nil {
		x.inPos = x.consumed()
		x.inLen = 0
		x.z.free()
		x.z = nil
	}
	x.rb.pending = nil
	if x.rb.err == nil || x.rb.err == io.EOF {
		x.rb.err = errClosed
	}
	return nil
}

var errClosed = errors.New("zran: Indexer is closed")

// Read reads uncompressed bytes. It returns io.EOF at the end of the last
// member. A stream that ends early yields an error wrapping
// io.ErrUnexpectedEOF; corrupt data yields an error naming the compressed
// offset and zlib's message.
//
// Reads of 64 KiB or more inflate straight into p; smaller ones go through
// an internal buffer.
func (x *Indexer) Read(p []byte) (int, error) {
	return x.rb.read(p, x)
}

func (x *Indexer) step(dst []byte) (int, error) {
	switch x.state {
	case stateMember:
		return x.inflate(dst)
	case stateBetween:
		return 0, x.nextMember()
	default:
		return 0, x.skipPadding()
	}
}

// consumed is the blob offset of the next byte zlib has not taken.
func (x *Indexer) consumed() int64 {
	return x.inPos + int64(x.inLen-x.z.availIn())
}

// fill refills the (fully consumed) input buffer from r.
func (x *Indexer) fill() error {
	x.inPos += int64(x.inLen)
	x.inLen = 0
	x.z.setInput(0)
	for tries := 0; tries < 100; tries++ {
		n, err := x.r.Read(x.z.in)
		if n > 0 {
			x.inLen = n
			x.z.setInput(n)
		}
		if err == io.EOF {
			x.inEOF = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("zran: reading compressed stream at offset %d: %w", x.inPos, err)
		}
		if n > 0 {
			return nil
		}
	}
	return fmt.Errorf("zran: reading compressed stream at offset %d: %w", x.inPos, io.ErrNoProgress)
}

// inflate inflates one step into p: up to the next block boundary, the end
// of the member, or the end of p or of the buffered input.
func (x *Indexer) inflate(p []byte) (int, error) {
	if x.z.availIn() == 0 && !x.inEOF {
		if err := x.fill(); err != nil {
			return 0, err
		}
	}
	n, ret := x.z.inflate(p, zBlock)
	x.out += int64(n)
	switch ret {
	case zOK:
		// Bit 128: stopped at a block boundary; bit 64: that boundary ends
		// the member's last block, which is no place to restart from.
		if dt := x.z.dataType(); dt&128 != 0 && dt&64 == 0 {
			return n, x.blockBoundary(uint8(dt & 7))
		}
		return n, nil
	case zStreamEnd:
		x.state = stateBetween
		return n, nil
	case zBufError:
		if x.z.availIn() == 0 && x.inEOF {
			return n, fmt.Errorf("zran: gzip stream truncated at compressed offset %d: %w", x.consumed(), io.ErrUnexpectedEOF)
		}
		if x.z.availIn() != 0 {
			return n, fmt.Errorf("zran: inflate made no progress at compressed offset %d", x.consumed())
		}
		return n, nil
	default:
		return n, fmt.Errorf("zran: corrupt gzip data at compressed offset %d (output offset %d): %s", x.consumed(), x.out, x.z.msg(ret))
	}
}

// nextMember looks at what follows a member (or the start of the stream).
func (x *Indexer) nextMember() error {
	if x.z.availIn() == 0 {
		if x.inEOF {
			if x.members == 0 {
				return fmt.Errorf("zran: no gzip data at compressed offset 0: %w", io.ErrUnexpectedEOF)
			}
			return x.finish()
		}
		return x.fill()
	}
	next := x.z.in[x.inLen-x.z.availIn()]
	switch {
	case x.members == 0 || next == 0x1f:
		// zlib judges the header, and its message names what is wrong.
		if x.members > 0 {
			if err := x.z.reset(wbitsGzip); err != nil {
				return err
			}
		}
		x.members++
		x.state = stateMember
		return x.memberStart()
	case next == 0:
		x.state = statePadding
		return nil
	default:
		return fmt.Errorf("zran: unexpected byte 0x%02x after gzip member at compressed offset %d", next, x.consumed())
	}
}

// skipPadding consumes zero bytes up to the end of the stream.
func (x *Indexer) skipPadding() error {
	if x.z.availIn() == 0 {
		if x.inEOF {
			return x.finish()
		}
		return x.fill()
	}
	start := x.inLen - x.z.availIn()
	for i, b := range x.z.in[start:x.inLen] {
		if b != 0 {
			x.z.skip(i)
			return fmt.Errorf("zran: unexpected byte 0x%02x in padding after gzip stream at compressed offset %d", b, x.consumed())
		}
	}
	x.z.skip(x.inLen - start)
	return nil
}

// finish handles the end of the stream, which is a boundary for spacing
// purposes only.
func (x *Indexer) finish() error {
	if err := x.emitCandIfDue(x.out); err != nil {
		return err
	}
	return io.EOF
}

func (x *Indexer) memberStart() error {
	c := Checkpoint{Out: x.out, In: x.consumed(), MemberStart: true}
	if x.emitted == 0 {
		return x.emit(c, nil)
	}
	if c.Out == x.lastOut {
		return nil
	}
	if err := x.emitCandIfDue(c.Out); err != nil {
		return err
	}
	// A member start replaces a candidate at the same offset: it needs no
	// window.
	x.setCand(c, 0, c.Out-x.lastOut >= x.spacing/4)
	return nil
}

func (x *Indexer) blockBoundary(bits uint8) error {
	out := x.out
	if out == x.lastOut || (x.haveCand && out == x.cand.Out) {
		// The earlier checkpoint or candidate for this offset is as good,
		// and the gzip header's end lands here too.
		return nil
	}
	if err := x.emitCandIfDue(out); err != nil {
		return err
	}
	n, err := x.z.window(x.candWin)
	if err != nil {
		return fmt.Errorf("%w at output offset %d", err, out)
	}
	// Past spacing already: the block just finished is longer than spacing
	// by itself, so this boundary is due.
	x.setCand(Checkpoint{Out: out, In: x.consumed(), Bits: bits}, n, out-x.lastOut > x.spacing)
	return nil
}

func (x *Indexer) setCand(c Checkpoint, windowLen int, due bool) {
	x.cand, x.candLen, x.candDue, x.haveCand = c, windowLen, due, true
}

// emitCandIfDue emits the candidate when the next boundary, at out, would be
// too far from the last checkpoint, or when the candidate was due anyway.
// Due candidates wait for a boundary past them so that none lands on the
// very end of the stream, where it would be useless.
func (x *Indexer) emitCandIfDue(out int64) error {
	if !x.haveCand || out <= x.cand.Out || !x.candDue && out-x.lastOut <= x.spacing {
		return nil
	}
	x.haveCand = false
	return x.emit(x.cand, x.candWin[:x.candLen])
}

func (x *Indexer) emit(c Checkpoint, window []byte) error {
	if len(window) > 0 {
		c.Window = append([]byte(nil), window...)
	}
	x.lastOut = c.Out
	x.emitted++
	if err := x.onCheckpoint(c); err != nil {
		return fmt.Errorf("zran: checkpoint at output offset %d: %w", c.Out, err)
	}
	return nil
}
