package zran

/*
#cgo LDFLAGS: -lz
#include <stdlib.h>
#include <zlib.h>

// zr_stream keeps the count of bytes produced by the last zr_inflate next to
// the z_stream, so Go can read it without passing a Go pointer to C.
typedef struct {
	z_stream s;
	unsigned int produced;
} zr_stream;

static zr_stream *zr_new(void) { return calloc(1, sizeof(zr_stream)); }

// inflateInit2 is a macro, which cgo cannot call.
static int zr_init(zr_stream *z, int wbits) { return inflateInit2(&z->s, wbits); }

// zr_inflate takes the output buffer as an argument and forgets it before
// returning: the buffer may be Go memory, which C must not keep.
static int zr_inflate(zr_stream *z, unsigned char *out, unsigned int n, int flush) {
	z->s.next_out = out;
	z->s.avail_out = n;
	int ret = inflate(&z->s, flush);
	z->produced = n - z->s.avail_out;
	z->s.next_out = Z_NULL;
	z->s.avail_out = 0;
	return ret;
}

// zr_getdict returns the window length, or -1 when zlib refuses.
static int zr_getdict(zr_stream *z, unsigned char *dst) {
	uInt n = 0;
	if (inflateGetDictionary(&z->s, dst, &n) != Z_OK) return -1;
	return (int)n;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// WindowSize is the largest window a Checkpoint carries: deflate never refers
// further back than this.
const WindowSize = 32 << 10

// wbitsGzip has inflateInit2 expect a gzip wrapper.
const wbitsGzip = 31

// The zlib return codes and flush modes this package uses, as Go constants.
const (
	zOK        = int(C.Z_OK)
	zStreamEnd = int(C.Z_STREAM_END)
	zBufError  = int(C.Z_BUF_ERROR)
	zNoFlush   = int(C.Z_NO_FLUSH)
	zBlock     = int(C.Z_BLOCK)
)

// maxInflateOut keeps avail_out, a 32-bit count, from overflowing.
const maxInflateOut = 1 << 30

// zstream owns one zlib inflate state and its C-allocated input buffer.
// The input buffer is C memory so that next_in can stay set across calls
// without breaking cgo's pointer rules.
type zstream struct {
	z    *C.zr_stream
	in   []byte // C memory viewed from Go; len is the capacity
	live bool   // inflateInit2 succeeded, so inflateEnd is due
}

func newZstream(inSize, wbits int) (*zstream, error) {
	z := &zstream{z: C.zr_new()}
	if z.z == nil {
		return nil, fmt.Errorf("zran: allocating inflate state: out of memory")
	}
	var err error
	if z.in, err = allocInput(inSize); err != nil {
		z.free()
		return nil, err
	}
	if ret := int(C.zr_init(z.z, C.int(wbits))); ret != zOK {
		z.free()
		return nil, fmt.Errorf("zran: inflateInit2: zlib error %d", ret)
	}
	z.live = true
	return z, nil
}

// allocInput allocates an input buffer in C memory, so that next_in can
// stay set across calls without breaking cgo's pointer rules.
func allocInput(n int) ([]byte, error) {
	p := C.malloc(C.size_t(n))
	if p == nil {
		return nil, fmt.Errorf("zran: allocating %d byte input buffer: out of memory", n)
	}
	return unsafe.Slice((*byte)(p), n), nil
}

// freeInput frees a buffer of allocInput, once.
func freeInput(in *[]byte) {
	if *in != nil {
		C.free(unsafe.Pointer(&(*in)[0]))
		*in = nil
	}
}

// free releases everything; it is safe to call more than once.
func (z *zstream) free() {
	if z.z == nil {
		return
	}
	if z.live {
		C.inflateEnd(&z.z.s)
		z.live = false
	}
	freeInput(&z.in)
	C.free(unsafe.Pointer(z.z))
	z.z = nil
}

func (z *zstream) reset(wbits int) error {
	if ret := int(C.inflateReset2(&z.z.s, C.int(wbits))); ret != zOK {
		return fmt.Errorf("zran: inflateReset2: zlib error %d", ret)
	}
	return nil
}

// setInput makes the first n bytes of the input buffer the pending input.
func (z *zstream) setInput(n int) {
	z.z.s.next_in = (*C.Bytef)(unsafe.Pointer(&z.in[0]))
	z.z.s.avail_in = C.uInt(n)
}

func (z *zstream) availIn() int { return int(z.z.s.avail_in) }

// skip drops n bytes of pending input without inflating them.
func (z *zstream) skip(n int) {
	z.z.s.next_in = (*C.Bytef)(unsafe.Add(unsafe.Pointer(z.z.s.next_in), n))
	z.z.s.avail_in -= C.uInt(n)
}

// inflate writes into out and reports how many bytes it wrote and zlib's
// return code.
func (z *zstream) inflate(out []byte, flush int) (int, int) {
	if len(out) > maxInflateOut {
		out = out[:maxInflateOut]
	}
	ret := int(C.zr_inflate(z.z, (*C.uchar)(unsafe.Pointer(&out[0])), C.uint(len(out)), C.int(flush)))
	return int(z.z.produced), ret
}

func (z *zstream) dataType() int { return int(z.z.s.data_type) }

// window copies zlib's sliding window (the output since the last reset, at
// most WindowSize bytes) into dst, which must hold WindowSize bytes.
func (z *zstream) window(dst []byte) (int, error) {
	n := int(C.zr_getdict(z.z, (*C.uchar)(unsafe.Pointer(&dst[0]))))
	if n < 0 {
		return 0, fmt.Errorf("zran: inflateGetDictionary failed")
	}
	return n, nil
}

// msg is zlib's explanation of the last error, or a generic one.
func (z *zstream) msg(ret int) string {
	if z.z.s.msg != nil {
		return C.GoString(z.z.s.msg)
	}
	return fmt.Sprintf("zlib error %d", ret)
}
