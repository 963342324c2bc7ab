package libostree

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"
	"strings"
)

// OSTree names a regular file's content object by the sha256 of a file
// header followed by the file's bytes. The header is the GVariant
// (uuuusa(ayay)): uid, gid and st_mode stored big-endian, rdev 0, the
// symlink target (empty for a regular file) and the xattrs, sorted by
// name, each name a bytestring with its trailing NUL. It is hashed
// behind its size, a big-endian uint32, and 4 bytes of padding that align
// it to 8.
//
// explodefs hashes in Go rather than asking libostree: Go's sha256 uses
// the CPU's SHA instructions, which this libostree build does not (it
// hashes at about a quarter of the speed), and knowing the name before
// writing lets a writer skip an object the repository already has.

// newContentHash returns a hash that has taken in meta's file header:
// write the file's bytes into it and its Sum is the object's checksum.
func newContentHash(meta FileMeta) hash.Hash {
	h := sha256.New()
	h.Write(fileHeader(meta))
	return h
}

// contentChecksum is the checksum of the regular file with metadata meta
// and bytes data.
func contentChecksum(meta FileMeta, data []byte) Checksum {
	h := newContentHash(meta)
	h.Write(data)
	var c Checksum
	h.Sum(c[:0])
	return c
}

// fileHeader serializes meta's file header with its size prefix.
func fileHeader(meta FileMeta) []byte {
	body := make([]byte, 0, 64)
	body = binary.BigEndian.AppendUint32(body, meta.UID)
	body = binary.BigEndian.AppendUint32(body, meta.GID)
	body = binary.BigEndian.AppendUint32(body, meta.Mode)
	body = append(body, 0, 0, 0, 0) // rdev
	body = append(body, 0)          // the empty symlink target
	targetEnd := len(body)
	body = append(body, xattrArray(sortedXattrs(meta.Xattrs))...)
	header := frame(body, []int{targetEnd})
	out := make([]byte, 8, 8+len(header))
	binary.BigEndian.PutUint32(out, uint32(len(header)))
	return append(out, header...)
}

// sortedXattrs orders xattrs by name, as OSTree reads them from disk.
func sortedXattrs(xs []Xattr) []Xattr {
	return slices.SortedFunc(slices.Values(xs), func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
}

// xattrArray serializes the GVariant a(ayay) of xattrs. Its elements
// vary in size, so each one's end is framed after them all.
func xattrArray(xs []Xattr) []byte {
	var body []byte
	ends := make([]int, 0, len(xs))
	for _, x := range xs {
		var elem []byte
		elem = append(elem, x.Name...)
		elem = append(elem, 0)
		nameEnd := len(elem)
		elem = append(elem, x.Value...)
		body = append(body, frame(elem, []int{nameEnd})...)
		ends = append(ends, len(body))
	}
	return frame(body, ends)
}

// frame appends a GVariant container's framing offsets to its body, in
// the order given, each in the smallest width (1, 2, 4 or 8 bytes,
// little-endian) in which the whole container's size fits.
func frame(body []byte, offsets []int) []byte {
	if len(offsets) == 0 {
		return body
	}
	n := len(offsets)
	width := 8
	switch {
	case len(body)+n <= 0xff:
		width = 1
	case len(body)+2*n <= 0xffff:
		width = 2
	case uint64(len(body))+4*uint64(n) <= 0xffffffff:
		width = 4
	}
	for _, off := range offsets {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(off))
		body = append(body, b[:width]...)
	}
	return body
}
