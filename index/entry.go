package index

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"time"
)

// EntryType is the kind of a tar entry, reduced to what a filesystem shows.
type EntryType uint8

// Entry types. Hardlink only appears in a layer's entries; the merged view
// resolves it to the inode of its target.
const (
	TypeRegular EntryType = iota + 1
	TypeDir
	TypeSymlink
	TypeHardlink
	TypeChar
	TypeBlock
	TypeFifo
)

func (t EntryType) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeHardlink:
		return "hardlink"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	case TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// FileMode returns the io/fs type bits of t.
func (t EntryType) FileMode() fs.FileMode {
	switch t {
	case TypeDir:
		return fs.ModeDir
	case TypeSymlink:
		return fs.ModeSymlink
	case TypeChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case TypeBlock:
		return fs.ModeDevice
	case TypeFifo:
		return fs.ModeNamedPipe
	}
	return 0
}

// Xattr is one extended attribute of an entry.
type Xattr struct {
	Name  string
	Value []byte
}

// Entry is one tar entry of a layer, as recorded by the layer pass.
type Entry struct {
	// Path is cleaned and relative to the image root ("" is the root
	// itself); it never contains "." or ".." components.
	Path string
	Type EntryType
	// Mode holds the permission bits with setuid, setgid and sticky (07777).
	Mode     uint32
	UID, GID uint32
	// Size is the length of a regular file: of its data at Offset in the
	// layer stream, or for a sparse file its logical length, holes
	// included.
	Size    int64
	ModTime time.Time
	// Linkname is the symlink target as written, or the cleaned path of a
	// hard link's target.
	Linkname           string
	DevMajor, DevMinor uint32
	Xattrs             []Xattr
	// Offset is where the entry's data starts in the uncompressed stream.
	Offset int64
	// Sparse lists the data fragments of a sparse file, sorted by offset;
	// nil for every other entry. Size is then the file's logical size.
	Sparse []Fragment
}

// entryEncodingVersion lets a later release read old indexes or reject them
// clearly instead of misreading them. Version 2 added sparse maps.
const entryEncodingVersion = 2

// sparseFlag marks, in the type byte, an entry followed by a sparse map,
// so entries without one cost no byte more.
const sparseFlag = 0x80

// MarshalBinary encodes e compactly: varints for numbers, lengths before
// strings. Index bytes per entry is a product goal, so no field names.
func (e *Entry) MarshalBinary() ([]byte, error) {
	if e.Type&sparseFlag != 0 {
		return nil, fmt.Errorf("entry %q: type %d cannot be encoded", e.Path, e.Type)
	}
	typ := byte(e.Type)
	if e.Sparse != nil {
		typ |= sparseFlag
	}
	b := make([]byte, 0, 48+len(e.Path)+len(e.Linkname)+6*len(e.Sparse))
	b = append(b, entryEncodingVersion, typ)
	b = appendString(b, e.Path)
	b = binary.AppendUvarint(b, uint64(e.Mode))
	b = binary.AppendUvarint(b, uint64(e.UID))
	b = binary.AppendUvarint(b, uint64(e.GID))
	b = binary.AppendUvarint(b, uint64(e.Size))
	b = binary.AppendVarint(b, e.ModTime.Unix())
	b = binary.AppendUvarint(b, uint64(e.ModTime.Nanosecond()))
	b = appendString(b, e.Linkname)
	b = binary.AppendUvarint(b, uint64(e.DevMajor))
	b = binary.AppendUvarint(b, uint64(e.DevMinor))
	b = binary.AppendUvarint(b, uint64(e.Offset))
	b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
	for _, x := range e.Xattrs {
		b = appendString(b, x.Name)
		b = appendString(b, string(x.Value))
	}
	if e.Sparse != nil {
		var err error
		if b, err = appendSparse(b, e); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// appendSparse encodes the fragments as deltas: the gap before each
// fragment, its length, and how far its data lies from where the previous
// fragment's data ended (zero for every map a tar can hold, since
// fragments are stored back to back from the entry's offset).
func appendSparse(b []byte, e *Entry) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(e.Sparse)))
	end, dataEnd := int64(0), e.Offset
	for _, f := range e.Sparse {
		if f.Offset < end || f.Length < 0 || f.Offset > e.Size-f.Length {
			return nil, fmt.Errorf("entry %q: fragment %d+%d unsorted, overlapping or beyond size %d", e.Path, f.Offset, f.Length, e.Size)
		}
		b = binary.AppendUvarint(b, uint64(f.Offset-end))
		b = binary.AppendUvarint(b, uint64(f.Length))
		b = binary.AppendVarint(b, f.Data-dataEnd)
		end, dataEnd = f.Offset+f.Length, f.Data+f.Length
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (e *Entry) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if v := d.byte(); v != entryEncodingVersion {
		return fmt.Errorf("entry encoding version %d, want %d", v, entryEncodingVersion)
	}
	typ := d.byte()
	e.Type = EntryType(typ &^ sparseFlag)
	e.Path = d.string()
	e.Mode = uint32(d.uvarint())
	e.UID = uint32(d.uvarint())
	e.GID = uint32(d.uvarint())
	e.Size = int64(d.uvarint())
	sec := d.varint()
	nsec := int64(d.uvarint())
	e.ModTime = time.Unix(sec, nsec).UTC()
	e.Linkname = d.string()
	e.DevMajor = uint32(d.uvarint())
	e.DevMinor = uint32(d.uvarint())
	e.Offset = int64(d.uvarint())
	n := d.uvarint()
	e.Xattrs = nil
	if n > uint64(len(b)) {
		return errCorruptEntry
	}
	for i := uint64(0); i < n; i++ {
		name := d.string()
		e.Xattrs = append(e.Xattrs, Xattr{Name: name, Value: []byte(d.string())})
	}
	e.Sparse = nil
	if typ&sparseFlag != 0 {
		if err := d.sparse(e); err != nil {
			return err
		}
	}
	if d.err == nil && len(d.b) != 0 {
		return errCorruptEntry
	}
	return d.err
}

// sparse decodes what appendSparse wrote, refusing maps that the reader
// could not trust: unsorted, overlapping, or beyond the file.
func (d *decoder) sparse(e *Entry) error {
	n := d.uvarint()
	// Each fragment takes at least three bytes.
	if d.err != nil || n > uint64(len(d.b))/3 || e.Size < 0 || e.Offset < 0 {
		return errCorruptEntry
	}
	e.Sparse = make([]Fragment, 0, n)
	end, dataEnd := int64(0), e.Offset
	for range n {
		gap, length, delta := d.uvarint(), d.uvarint(), d.varint()
		if d.err != nil || gap > uint64(e.Size-end) || length > uint64(e.Size-end)-gap {
			return errCorruptEntry
		}
		f := Fragment{Offset: end + int64(gap), Length: int64(length), Data: dataEnd + delta}
		if f.Data < 0 || f.Data > math.MaxInt64-f.Length {
			return errCorruptEntry
		}
		e.Sparse = append(e.Sparse, f)
		end, dataEnd = f.Offset+f.Length, f.Data+f.Length
	}
	return nil
}

var errCorruptEntry = fmt.Errorf("undecodable entry: %w", ErrCorrupt)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptEntry
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptEntry
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
