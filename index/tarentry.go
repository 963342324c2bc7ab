package index

import (
	"archive/tar"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"
)

var errUnsupportedType = errors.New("unsupported tar entry type")

// entryFromHeader converts a tar header to an Entry, cleaning its names.
// ok is false for headers that describe no file (PAX global headers).
func entryFromHeader(h *tar.Header, offset int64) (e Entry, ok bool, err error) {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		// archive/tar turns the old TypeRegA into TypeReg (or TypeDir)
		// itself. For a sparse file h.Size is its logical size; the pass
		// adds the fragments.
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
// encoded name> with a base64 value, and by default SCHILY.xattr.<name>
// for the same attribute too.
const (
	schilyXattr     = "SCHILY.xattr."
	libarchiveXattr = "LIBARCHIVE.xattr."
)

// Kernel limits on extended attributes (linux/limits.h). An attribute
// beyond them could never be read back through the mount, and a list of
// names beyond XATTR_LIST_MAX makes listxattr fail for the whole file.
const (
	xattrNameMax = 255
	xattrSizeMax = 64 << 10
	xattrListMax = 64 << 10
	// maxEntryXattrBytes bounds the names and values of one entry: a few
	// full-size values, far above what real images carry (a capability,
	// an ACL, an SELinux label).
	maxEntryXattrBytes = 256 << 10
)

// xattrNamespaces are the prefixes Linux accepts; a name outside them
// could not exist on a real filesystem.
var xattrNamespaces = [...]string{"user.", "trusted.", "security.", "system."}

var errBadXattr = errors.New("invalid extended attribute")

// xattrsFromPAX collects an entry's extended attributes. Names are
// checked as the kernel would (namespace, length, no NUL: a NUL would
// split one name into two in listxattr, faking an attribute such as
// security.capability), and sizes are bounded. When both SCHILY and
// LIBARCHIVE records name one attribute, the SCHILY value wins, as it
// does for archive/tar's Header.Xattrs and so for umoci.
func xattrsFromPAX(records map[string]string) ([]Xattr, error) {
	byName := map[string]Xattr{}
	schily := map[string]bool{}
	for k, v := range records {
		var x Xattr
		switch {
		case strings.HasPrefix(k, schilyXattr):
			x = Xattr{Name: k[len(schilyXattr):], Value: []byte(v)}
		case strings.HasPrefix(k, libarchiveXattr):
			// libarchive escapes only with %XX; a '+' is a plus sign.
			name, err := url.PathUnescape(k[len(libarchiveXattr):])
			if err != nil {
				return nil, fmt.Errorf("%w: record %q: %w", errBadXattr, k, err)
			}
			val, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("%w: record %q: %w", errBadXattr, k, err)
			}
			x = Xattr{Name: name, Value: val}
		default:
			continue
		}
		if err := checkXattr(x); err != nil {
			return nil, fmt.Errorf("record %q: %w", k, err)
		}
		isSchily := strings.HasPrefix(k, schilyXattr)
		if _, dup := byName[x.Name]; dup {
			if !isSchily && !schily[x.Name] {
				// Two escapings of one name: no rule says which wins.
				return nil, fmt.Errorf("%w: %q is named by two LIBARCHIVE records", errBadXattr, x.Name)
			}
			if !isSchily {
				continue
			}
		}
		byName[x.Name] = x
		schily[x.Name] = isSchily
	}
	if len(byName) == 0 {
		return nil, nil
	}
	out := make([]Xattr, 0, len(byName))
	list, total := 0, 0
	for _, x := range byName {
		out = append(out, x)
		list += len(x.Name) + 1
		total += len(x.Name) + len(x.Value)
	}
	if list > xattrListMax {
		return nil, fmt.Errorf("%w: names take %d bytes, the kernel lists at most %d", errBadXattr, list, xattrListMax)
	}
	if total > maxEntryXattrBytes {
		return nil, fmt.Errorf("%w: %d bytes of names and values, at most %d per entry", errBadXattr, total, maxEntryXattrBytes)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func checkXattr(x Xattr) error {
	switch {
	case x.Name == "":
		return fmt.Errorf("%w: empty name", errBadXattr)
	case strings.IndexByte(x.Name, 0) >= 0:
		return fmt.Errorf("%w: NUL byte in name %q", errBadXattr, x.Name)
	case len(x.Name) > xattrNameMax:
		return fmt.Errorf("%w: name of %d bytes, the kernel allows %d", errBadXattr, len(x.Name), xattrNameMax)
	case len(x.Value) > xattrSizeMax:
		return fmt.Errorf("%w: %s has a value of %d bytes, the kernel allows %d", errBadXattr, x.Name, len(x.Value), xattrSizeMax)
	}
	for _, ns := range xattrNamespaces {
		if strings.HasPrefix(x.Name, ns) && len(x.Name) > len(ns) {
			return nil
		}
	}
	return fmt.Errorf("%w: name %q is outside the user., trusted., security. and system. namespaces", errBadXattr, x.Name)
}

// xattrBytes is what an entry's attributes cost in memory in a view.
func xattrBytes(xs []Xattr) int64 {
	var n int64
	for _, x := range xs {
		n += int64(len(x.Name) + len(x.Value))
	}
	return n
}

// hasWhiteoutDir reports whether a directory of p, not its final name,
// starts with ".wh.". The OCI image spec reserves the prefix, so no image
// can hold such a directory; a final ".wh." name is a whiteout or an
// opaque marker, which the merged view applies and never shows.
func hasWhiteoutDir(p string) bool {
	dir, _ := path.Split(p)
	for _, c := range strings.Split(dir, "/") {
		if strings.HasPrefix(c, whiteoutPrefix) {
			return true
		}
	}
	return false
}
