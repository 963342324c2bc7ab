package zran

/*
#cgo LDFLAGS: -lisal
#include <stdlib.h>
#include <isa-l/igzip_lib.h>

// zi_stream keeps the count of bytes produced by the last zi_inflate next
// to ISA-L's state, so Go can read it without passing a Go pointer to C.
typedef struct {
	struct inflate_state s;
	unsigned int produced;
} zi_stream;

static zi_stream *zi_new(void) { return calloc(1, sizeof(zi_stream)); }

static void zi_init(zi_stream *z) {
	isal_inflate_init(&z->s);
	z->s.crc_flag = ISAL_DEFLATE;
}

// zi_inflate takes the output buffer as an argument and forgets it before
// returning: the buffer may be Go memory, which C must not keep.
static int zi_inflate(zi_stream *z, unsigned char *out, unsigned int n) {
	z->s.next_out = out;
	z->s.avail_out = n;
	int ret = isal_inflate(&z->s);
	z->produced = n - z->s.avail_out;
	z->s.next_out = NULL;
	z->s.avail_out = 0;
	return ret;
}

static int zi_finished(zi_stream *z) { return z->s.block_state == ISAL_BLOCK_FINISH; }

// zi_prime puts the bits of a checkpoint's partial byte in front of the
// input, where inflatePrime puts them in zlib.
static void zi_prime(zi_stream *z, int bits, unsigned int value) {
	z->s.read_in = value;
	z->s.read_in_length = bits;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// istream owns one ISA-L inflate state, for raw deflate data, and its
// C-allocated input buffer.
//
// Readers inflate from checkpoints with ISA-L's igzip, which inflates
// about three times as fast as zlib on the same CPU; the Indexer keeps
// zlib, whose Z_BLOCK stops at the block boundaries that checkpoints
// need, and so do readers from a member's start, which check gzip
// headers and trailers. A checkpoint is the same to both: a bit position,
// primed into the inflater's bit buffer, and a window, set as its
// dictionary.
type istream struct {
	z  *C.zi_stream
	in []byte // C memory viewed from Go; len is the capacity
}

func newIstream(inSize int) (*istream, error) {
	z := &istream{z: C.zi_new()}
	if z.z == nil {
		return nil, fmt.Errorf("zran: allocating inflate state: out of memory")
	}
	var err error
	if z.in, err = allocInput(inSize); err != nil {
		z.free()
		return nil, err
	}
	C.zi_init(z.z)
	return z, nil
}

// free releases everything; it is safe to call more than once.
func (z *istream) free() {
	if z.z == nil {
		return
	}
	freeInput(&z.in)
	C.free(unsafe.Pointer(z.z))
	z.z = nil
}

// setInput makes the first n bytes of the input buffer the pending input.
func (z *istream) setInput(n int) {
	z.z.s.next_in = (*C.uint8_t)(unsafe.Pointer(&z.in[0]))
	z.z.s.avail_in = C.uint32_t(n)
}

func (z *istream) input() []byte { return z.in }

func (z *istream) availIn() int { return int(z.z.s.avail_in) }

// skip drops n bytes of pending input without inflating them; a negative
// n takes back bytes already consumed.
func (z *istream) skip(n int) {
	z.z.s.next_in = (*C.uint8_t)(unsafe.Add(unsafe.Pointer(z.z.s.next_in), n))
	z.z.s.avail_in -= C.uint32_t(n)
}

// inflate writes into out and reports how many bytes it wrote and what
// came of it, in zlib's return codes: zOK, zStreamEnd at the end of the
// deflate data, zBufError when it could make no progress, or
// the (negative) ISA-L error code.
func (z *istream) inflate(out []byte) (int, int) {
	if len(out) > maxInflateOut {
		out = out[:maxInflateOut]
	}
	before := z.availIn()
	ret := int(C.zi_inflate(z.z, (*C.uchar)(unsafe.Pointer(&out[0])), C.uint(len(out))))
	n := int(z.z.produced)
	switch {
	case ret < 0:
		return n, ret
	case ret == C.ISAL_NEED_DICT:
		return n, errNeedDict
	case C.zi_finished(z.z) != 0:
		return n, zStreamEnd
	case n == 0 && z.availIn() == before:
		return n, zBufError
	}
	return n, zOK
}

// unusedBytes is how many whole bytes ISA-L holds in its bit buffer,
// read ahead of the data it inflated: at the end of a deflate stream,
// they belong to what follows.
func (z *istream) unusedBytes() int { return int(z.z.s.read_in_length) / 8 }

func (z *istream) prime(bits int, value byte) {
	C.zi_prime(z.z, C.int(bits), C.uint(value))
}

func (z *istream) setDictionary(w []byte) error {
	if ret := int(C.isal_inflate_set_dict(&z.z.s, (*C.uint8_t)(unsafe.Pointer(&w[0])), C.uint32_t(len(w)))); ret != 0 {
		return fmt.Errorf("zran: isal_inflate_set_dict: ISA-L error %d", ret)
	}
	return nil
}

// errNeedDict is what inflate returns when ISA-L asks for a dictionary,
// which raw deflate and gzip never do: a code of ours, below ISA-L's.
const errNeedDict = -100

// msg explains an ISA-L error code.
func (z *istream) msg(ret int) string {
	switch ret {
	case C.ISAL_INVALID_BLOCK:
		return "invalid deflate block"
	case C.ISAL_INVALID_SYMBOL:
		return "invalid deflate symbol"
	case C.ISAL_INVALID_LOOKBACK:
		return "invalid distance too far back"
	case C.ISAL_INVALID_WRAPPER:
		return "invalid gzip header"
	case C.ISAL_UNSUPPORTED_METHOD:
		return "unknown compression method"
	case C.ISAL_INCORRECT_CHECKSUM:
		return "incorrect data check"
	case errNeedDict:
		return "inflater asked for a dictionary"
	}
	return fmt.Sprintf("ISA-L error %d", ret)
}
