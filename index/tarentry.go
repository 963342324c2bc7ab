package index

import (
	"archive/tar"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

var errUnsupportedType = errors.New("unsupported tar entry type")

// entryFromHeader converts a tar header to an Entry, cleaning its names.
// ok is false for headers that describe no file (PAX global headers).
func entryFromHeader(h *tar.Header, offset int64) (e Entry, ok bool, err error) {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont: //nolint:staticcheck // TypeRegA still appears in old layers
		e.Type, e.Size, e.Offset = TypeRegular, h.Size, offset
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type = TypeSymlink
	case tar.TypeLink:
		e.Type = TypeHardlink
	case tar.TypeChar:
		e.Type = TypeChar
	case tar.TypeBlock:
		e.Type = TypeBlock
	case tar.TypeFifo:
		e.Type = TypeFifo
	case tar.TypeXGlobalHeader:
		return Entry{}, false, nil
	default:
		return Entry{}, false, fmt.Errorf("%w %q", errUnsupportedType, h.Typeflag)
	}
	if e.Path, err = CleanEntryPath(h.Name); err != nil {
		return Entry{}, false, err
	}
	if h.Uid < 0 || h.Gid < 0 || h.Uid > 1<<32-1 || h.Gid > 1<<32-1 {
		return Entry{}, false, fmt.Errorf("uid/gid %d/%d out of range", h.Uid, h.Gid)
	}
	e.Mode = uint32(h.Mode) & 0o7777
	e.UID, e.GID = uint32(h.Uid), uint32(h.Gid)
	e.ModTime = h.ModTime.UTC()
	switch e.Type {
	case TypeSymlink:
		e.Linkname = h.Linkname
	case TypeHardlink:
		if e.Linkname, err = CleanEntryPath(h.Linkname); err != nil {
			return Entry{}, false, fmt.Errorf("hard link target %q: %w", h.Linkname, err)
		}
	case TypeChar, TypeBlock:
		if h.Devmajor < 0 || h.Devminor < 0 {
			return Entry{}, false, fmt.Errorf("negative device number %d:%d", h.Devmajor, h.Devminor)
		}
		e.DevMajor, e.DevMinor = uint32(h.Devmajor), uint32(h.Devminor)
	}
	e.Xattrs, err = xattrsFromPAX(h.PAXRecords)
	return e, true, err
}

// PAX record prefixes that carry extended attributes: GNU tar and Go write
// SCHILY.xattr.<name>; libarchive (bsdtar) writes LIBARCHIVE.xattr.<url
// encoded name> with a base64 value.
const (
	schilyXattr     = "SCHILY.xattr."
	libarchiveXattr = "LIBARCHIVE.xattr."
)

func xattrsFromPAX(records map[string]string) ([]Xattr, error) {
	var out []Xattr
	for k, v := range records {
		switch {
		case strings.HasPrefix(k, schilyXattr):
			out = append(out, Xattr{Name: k[len(schilyXattr):], Value: []byte(v)})
		case strings.HasPrefix(k, libarchiveXattr):
			name, err := url.QueryUnescape(k[len(libarchiveXattr):])
			if err != nil {
				return nil, fmt.Errorf("xattr record %q: %w", k, err)
			}
			val, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("xattr record %q: %w", k, err)
			}
			out = append(out, Xattr{Name: name, Value: val})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
