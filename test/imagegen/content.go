package imagegen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
)

// Content is the body of a regular file entry. WriteTo must write exactly
// Size bytes and the same bytes on every call: layers are hashed while they
// are written, and determinism across runs is what the tests rely on.
type Content interface {
	Size() int64
	WriteTo(w io.Writer) (int64, error)
}

// Bytes is content given literally; fine for small files.
func Bytes(b []byte) Content { return literalContent(b) }

// String is content given literally as text.
func String(s string) Content { return literalContent(s) }

type literalContent []byte

func (c literalContent) Size() int64 { return int64(len(c)) }

func (c literalContent) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(c)
	return int64(n), err
}

// generateChunk is the unit in which generated content is produced and
// written; large enough to amortise call overhead, small enough to stay in
// cache.
const generateChunk = 64 << 10

// Text is size bytes of word-salad text drawn from a fixed word list, which
// compresses with gzip roughly like real documentation and source does.
func Text(seed uint64, size int64) Content {
	return textContent{seed: seed, size: size}
}

type textContent struct {
	seed uint64
	size int64
}

func (c textContent) Size() int64 { return c.size }

func (c textContent) WriteTo(w io.Writer) (int64, error) {
	rng := rand.New(newChaCha(c.seed))
	dictionary := words()
	buf := make([]byte, 0, generateChunk+64)
	var written int64
	wordsOnLine := 0
	for written < c.size {
		// Consume one 64-bit draw per four words to keep the PRNG off the
		// profile; the modulo bias of 16 bits over the list is irrelevant.
		r := rng.Uint64()
		for i := 0; i < 4; i++ {
			word := dictionary[int(r&0xffff)%len(dictionary)]
			r >>= 16
			buf = append(buf, word...)
			wordsOnLine++
			if wordsOnLine >= 8+int(r&7) {
				buf = append(buf, '\n')
				wordsOnLine = 0
			} else {
				buf = append(buf, ' ')
			}
		}
		if len(buf) >= generateChunk {
			n, err := writeUpTo(w, buf, c.size-written)
			written += n
			if err != nil {
				return written, err
			}
			buf = buf[:0]
		}
	}
	if written < c.size && len(buf) > 0 {
		n, err := writeUpTo(w, buf, c.size-written)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// Binary is size bytes that look like object code or media: blocks of
// random bytes (randomPercent of them, 0..100) interleaved with blocks that
// repeat a short pattern, so gzip finds something but not much.
func Binary(seed uint64, size int64, randomPercent int) Content {
	return binaryContent{seed: seed, size: size, randomPercent: randomPercent}
}

type binaryContent struct {
	seed          uint64
	size          int64
	randomPercent int
}

func (c binaryContent) Size() int64 { return c.size }

// binaryBlock is the granularity at which binary content switches between
// random and repetitive data.
const binaryBlock = 4 << 10

func (c binaryContent) WriteTo(w io.Writer) (int64, error) {
	chacha := newChaCha(c.seed)
	rng := rand.New(chacha)
	buf := make([]byte, generateChunk)
	pattern := make([]byte, 48)
	var written int64
	for written < c.size {
		for off := 0; off < len(buf); off += binaryBlock {
			block := buf[off : off+binaryBlock]
			if rng.IntN(100) < c.randomPercent {
				_, _ = chacha.Read(block) // ChaCha8.Read never fails
				continue
			}
			_, _ = chacha.Read(pattern[:8+rng.IntN(len(pattern)-8)])
			fillRepeating(block, pattern[:8+rng.IntN(len(pattern)-8)])
		}
		n, err := writeUpTo(w, buf, c.size-written)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func fillRepeating(dst, pattern []byte) {
	for i := 0; i < len(dst); i += copy(dst[i:], pattern) {
	}
}

// writeUpTo writes at most limit bytes of buf.
func writeUpTo(w io.Writer, buf []byte, limit int64) (int64, error) {
	if int64(len(buf)) > limit {
		buf = buf[:limit]
	}
	n, err := w.Write(buf)
	return int64(n), err
}

// newChaCha derives a ChaCha8 generator from a 64-bit seed. ChaCha8 is used
// rather than PCG because it also fills byte slices quickly.
func newChaCha(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	for i := 0; i < 4; i++ {
		// Distinct odd multipliers keep the four key words different even
		// for seed 0.
		binary.LittleEndian.PutUint64(key[i*8:], seed*0x9e3779b97f4a7c15+uint64(i)*0xbf58476d1ce4e5b9+1)
	}
	return rand.NewChaCha8(key)
}

// ReadAll materialises content; meant for tests and small files only.
func ReadAll(c Content) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(c.Size()))
	n, err := c.WriteTo(&buf)
	if err != nil {
		return nil, fmt.Errorf("generate content: %w", err)
	}
	if n != c.Size() {
		return nil, fmt.Errorf("generate content: wrote %d bytes, declared %d", n, c.Size())
	}
	return buf.Bytes(), nil
}
