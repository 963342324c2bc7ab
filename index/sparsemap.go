package index

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// archive/tar expands sparse files but keeps their maps to itself, so the
// pass reads the maps from the raw header bytes the tar reader consumed
// and from the PAX records it returns, the way archive/tar does. Every
// rule below mirrors archive/tar's reader.go, so that a file reads
// exactly as archive/tar (and umoci, which uses it) would expand it.

// Bounds on what a sparse entry may cost. archive/tar allows a million
// fragments; a real sparse file in an image has a handful, and each
// fragment costs memory in every view that shows the file.
const (
	maxSparseEntries = 1 << 16
	// maxLayerSparseFragments bounds the fragments a layer may record in
	// all, so many moderately fragmented files cannot add up to a view
	// that needs gigabytes.
	maxLayerSparseFragments = 1 << 20
	// maxHeaderCapture bounds the raw header bytes kept for one entry:
	// archive/tar allows 1 MiB each for a PAX header, a GNU long name, a
	// long link name and a sparse map, plus a few header blocks.
	maxHeaderCapture = 4<<20 + 8<<10
)

const blockSize = 512

var errBadSparseMap = errors.New("invalid sparse map")

// headerCapture sits between the counting reader and the tar reader and
// keeps the raw bytes of the current entry's headers: everything from
// the block after the previous entry's data up to where the tar reader
// stopped. File data is not kept, so this costs a copy of header bytes
// only.
type headerCapture struct {
	r io.Reader
	// off is the stream offset of the next byte read.
	off int64
	// from is the stream offset where the current entry's headers start.
	from     int64
	buf      []byte
	overflow bool
}

func (c *headerCapture) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if end := c.off + int64(n); end > c.from && !c.overflow {
		chunk := p[:n]
		if c.off < c.from {
			chunk = chunk[c.from-c.off:]
		}
		if len(c.buf)+len(chunk) > maxHeaderCapture {
			c.overflow = true
		} else {
			c.buf = append(c.buf, chunk...)
		}
	}
	c.off += int64(n)
	return n, err
}

// nextEntry starts capturing the headers of the entry after the one whose
// data ends at dataEnd. Tar blocks are aligned to the stream start, so the
// next header begins at the block boundary at or after dataEnd.
func (c *headerCapture) nextEntry(dataEnd int64) {
	c.from = (dataEnd + blockSize - 1) / blockSize * blockSize
	if cap(c.buf) > 64<<10 {
		c.buf = nil // let one large header go instead of keeping it for the layer
	}
	c.buf = c.buf[:0]
	c.overflow = false
}

// sparseKind says which sparse format, if any, archive/tar reads an entry in.
type sparseKind int

const (
	notSparse sparseKind = iota
	sparseOldGNU
	sparsePAX0x
	sparsePAX1x0
)

// sparseKindOf decides as archive/tar's handleSparseFile does.
func sparseKindOf(h *tar.Header) sparseKind {
	if h.Typeflag == tar.TypeGNUSparse {
		return sparseOldGNU
	}
	major, minor := h.PAXRecords["GNU.sparse.major"], h.PAXRecords["GNU.sparse.minor"]
	switch {
	case major == "0" && (minor == "0" || minor == "1"):
		return sparsePAX0x
	case major == "1" && minor == "0":
		return sparsePAX1x0
	case major != "" || minor != "":
		return notSparse // a version archive/tar does not know: read as stored
	case h.PAXRecords["GNU.sparse.map"] != "":
		return sparsePAX0x // 0.0 and 0.1 had no version records
	}
	return notSparse
}

// sparseEntry is one (offset, length) pair of a map as the tar stores it.
type sparseEntry struct{ offset, length int64 }

// sparseFile reads the map of the sparse entry h, whose packed data starts
// at dataStart in the stream, from the captured headers c. It returns the
// fragments with their stream offsets and the number of stored bytes.
func sparseFile(h *tar.Header, kind sparseKind, c *headerCapture, dataStart int64) ([]Fragment, int64, error) {
	if c.overflow {
		return nil, 0, fmt.Errorf("%w: the entry's headers exceed %d bytes", errBadSparseMap, maxHeaderCapture)
	}
	if c.from+int64(len(c.buf)) != dataStart {
		return nil, 0, fmt.Errorf("%w: captured headers [%d,+%d) do not end at the data (%d)", errBadSparseMap, c.from, len(c.buf), dataStart)
	}
	hdr, rest, err := mainHeader(c.buf)
	if err != nil {
		return nil, 0, err
	}
	if t := hdr[156]; t != h.Typeflag && !(t == 0 && h.Typeflag == tar.TypeReg) {
		return nil, 0, fmt.Errorf("%w: header block has type %q, the tar reader returned %q", errBadSparseMap, t, h.Typeflag)
	}
	// The stored size is the PAX size record when there is one, else the
	// header's size field, as archive/tar's mergePAX has it.
	stored, err := parseNumeric(hdr[124:136])
	if v := h.PAXRecords["size"]; v != "" {
		stored, err = strconv.ParseInt(v, 10, 64)
	}
	if err != nil || stored < 0 {
		return nil, 0, fmt.Errorf("%w: stored size unreadable", errBadSparseMap)
	}
	var entries []sparseEntry
	switch kind {
	case sparseOldGNU:
		entries, err = oldGNUSparseMap(hdr, rest)
	case sparsePAX0x:
		if len(rest) != 0 {
			return nil, 0, fmt.Errorf("%w: %d bytes between the header and the data", errBadSparseMap, len(rest))
		}
		entries, err = paxSparseMap0x(h.PAXRecords)
	case sparsePAX1x0:
		// The map is the first blocks of the stored data.
		entries, err = paxSparseMap1x0(rest)
		stored -= int64(len(rest))
	}
	if err != nil {
		return nil, 0, err
	}
	frags, err := fragmentsOf(entries, h.Size, stored, dataStart)
	return frags, stored, err
}

// mainHeader walks the captured blocks as archive/tar's Reader.next does:
// PAX ('x') and GNU long name ('L', 'K') headers and their data come
// first, then the file's own header. It returns that header block and the
// bytes after it.
func mainHeader(b []byte) (hdr, rest []byte, err error) {
	for {
		if len(b) < blockSize {
			return nil, nil, fmt.Errorf("%w: the file's header block was not captured", errBadSparseMap)
		}
		switch b[156] {
		case tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			size, err := parseNumeric(b[124:136])
			if err != nil || size < 0 || size > int64(len(b)) {
				return nil, nil, fmt.Errorf("%w: extended header of unreadable size", errBadSparseMap)
			}
			skip := blockSize + (size+blockSize-1)/blockSize*blockSize
			if skip > int64(len(b)) {
				return nil, nil, fmt.Errorf("%w: extended header runs past the captured headers", errBadSparseMap)
			}
			b = b[skip:]
		default:
			return b[:blockSize], b[blockSize:], nil
		}
	}
}

// oldGNUSparseMap reads the map of a GNU 'S' entry: four entries in the
// header, then extension blocks of 21 while the "extended" flag is set.
// ext holds exactly the extension blocks the tar reader consumed.
func oldGNUSparseMap(hdr, ext []byte) ([]sparseEntry, error) {
	if !bytes.Equal(hdr[257:265], []byte("ustar  \x00")) {
		return nil, fmt.Errorf("%w: GNU sparse entry without the GNU magic", errBadSparseMap)
	}
	var out []sparseEntry
	arr := hdr[386 : 386+4*24+1]
	for {
		n := len(arr) / 24
		for i := range n {
			e := arr[i*24:]
			if e[0] == 0 {
				break // archive/tar, GNU and BSD tar all stop here
			}
			off, err1 := parseNumeric(e[:12])
			length, err2 := parseNumeric(e[12:24])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%w: unreadable GNU sparse entry", errBadSparseMap)
			}
			if len(out) >= maxSparseEntries {
				return nil, fmt.Errorf("%w: more than %d fragments", errBadSparseMap, maxSparseEntries)
			}
			out = append(out, sparseEntry{off, length})
		}
		if arr[n*24] == 0 {
			break
		}
		if len(ext) < blockSize {
			return nil, fmt.Errorf("%w: GNU sparse extension block missing", errBadSparseMap)
		}
		arr, ext = ext[:blockSize], ext[blockSize:]
	}
	if len(ext) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the GNU sparse extension blocks", errBadSparseMap, len(ext))
	}
	return out, nil
}

// paxSparseMap0x reads the map of PAX sparse formats 0.0 and 0.1.
// archive/tar folds 0.0's repeated GNU.sparse.offset and
// GNU.sparse.numbytes records into GNU.sparse.map, as 0.1 writes it.
func paxSparseMap0x(records map[string]string) ([]sparseEntry, error) {
	n, err := strconv.ParseInt(records["GNU.sparse.numblocks"], 10, 0)
	if err != nil || n < 0 || n > maxSparseEntries {
		return nil, fmt.Errorf("%w: GNU.sparse.numblocks %q, at most %d fragments", errBadSparseMap, records["GNU.sparse.numblocks"], maxSparseEntries)
	}
	fields := strings.Split(records["GNU.sparse.map"], ",")
	if len(fields) == 1 && fields[0] == "" {
		fields = nil
	}
	if int64(len(fields)) != 2*n {
		return nil, fmt.Errorf("%w: %d numbers for %d fragments", errBadSparseMap, len(fields), n)
	}
	return parsePairs(fields)
}

// paxSparseMap1x0 reads the map of PAX sparse format 1.0, which starts the
// entry's data: newline-terminated decimal numbers, the count first, then
// offset and length pairs, padded to a block. m holds exactly the blocks
// the tar reader consumed, which must be the fewest that hold them all.
func paxSparseMap1x0(m []byte) ([]sparseEntry, error) {
	if len(m) == 0 || len(m)%blockSize != 0 {
		return nil, fmt.Errorf("%w: map of %d bytes is not whole blocks", errBadSparseMap, len(m))
	}
	// Tokens end at a newline; the last block must hold the newline
	// that ends the map, or the tar reader would not have read it.
	first, _, ok := bytes.Cut(m, []byte{'\n'})
	if !ok {
		return nil, fmt.Errorf("%w: no fragment count", errBadSparseMap)
	}
	n, err := strconv.ParseInt(string(first), 10, 0)
	if err != nil || n < 0 || n > maxSparseEntries {
		return nil, fmt.Errorf("%w: fragment count %q, at most %d fragments", errBadSparseMap, first, maxSparseEntries)
	}
	tokens := make([]string, 0, 2*n)
	pos := len(first) + 1
	for range 2 * n {
		i := bytes.IndexByte(m[pos:], '\n')
		if i < 0 {
			return nil, fmt.Errorf("%w: map shorter than its %d fragments", errBadSparseMap, n)
		}
		tokens = append(tokens, string(m[pos:pos+i]))
		pos += i + 1
	}
	if blocks := (pos + blockSize - 1) / blockSize; blocks != len(m)/blockSize {
		return nil, fmt.Errorf("%w: map ends in block %d of %d", errBadSparseMap, blocks, len(m)/blockSize)
	}
	return parsePairs(tokens)
}

func parsePairs(fields []string) ([]sparseEntry, error) {
	out := make([]sparseEntry, 0, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		off, err1 := strconv.ParseInt(fields[i], 10, 64)
		length, err2 := strconv.ParseInt(fields[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: fragment %q,%q", errBadSparseMap, fields[i], fields[i+1])
		}
		out = append(out, sparseEntry{off, length})
	}
	return out, nil
}

// fragmentsOf checks a map as archive/tar does (sorted, not overlapping,
// inside the file) and places each fragment's bytes in the stream: the
// fragments are stored back to back from dataStart, and archive/tar reads
// them so only when they fill the stored bytes exactly. Empty fragments
// are dropped and touching ones joined.
func fragmentsOf(entries []sparseEntry, size, stored, dataStart int64) ([]Fragment, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", errBadSparseMap, size)
	}
	if len(entries) > maxSparseEntries {
		return nil, fmt.Errorf("%w: %d fragments, at most %d", errBadSparseMap, len(entries), maxSparseEntries)
	}
	frags := []Fragment{}
	var prevEnd, data int64
	for _, e := range entries {
		switch {
		case e.offset < 0 || e.length < 0:
			return nil, fmt.Errorf("%w: negative fragment %d+%d", errBadSparseMap, e.offset, e.length)
		case e.offset > math.MaxInt64-e.length:
			return nil, fmt.Errorf("%w: fragment %d+%d overflows", errBadSparseMap, e.offset, e.length)
		case e.offset+e.length > size:
			return nil, fmt.Errorf("%w: fragment %d+%d beyond the file's size %d", errBadSparseMap, e.offset, e.length, size)
		case e.offset < prevEnd:
			return nil, fmt.Errorf("%w: fragment at %d overlaps or precedes the one ending at %d", errBadSparseMap, e.offset, prevEnd)
		}
		prevEnd = e.offset + e.length
		if e.length == 0 {
			continue
		}
		if n := len(frags); n > 0 && frags[n-1].Offset+frags[n-1].Length == e.offset {
			frags[n-1].Length += e.length
		} else {
			frags = append(frags, Fragment{Offset: e.offset, Length: e.length, Data: dataStart + data})
		}
		data += e.length
	}
	if data != stored {
		return nil, fmt.Errorf("%w: fragments hold %d bytes, the entry stores %d", errBadSparseMap, data, stored)
	}
	return frags, nil
}

// parseNumeric reads a numeric header field as archive/tar does: base-256
// when the high bit is set, else octal padded with spaces and NULs.
func parseNumeric(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var inv byte
		if b[0]&0x40 != 0 {
			inv = 0xff
		}
		var x uint64
		for i, c := range b {
			c ^= inv
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 > 0 {
				return 0, strconv.ErrRange
			}
			x = x<<8 | uint64(c)
		}
		if x>>63 > 0 {
			return 0, strconv.ErrRange
		}
		if inv == 0xff {
			return ^int64(x), nil
		}
		return int64(x), nil
	}
	b = bytes.Trim(b, " \x00")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return 0, nil
	}
	x, err := strconv.ParseUint(string(b), 8, 64)
	return int64(x), err
}
