package index

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Limits that keep a hostile layer from making the view unusable. A name
// longer than NAME_MAX could never be looked up through the kernel.
const (
	maxNameLen = 255
	maxPathLen = 1 << 16
)

var (
	errEscapesRoot = errors.New("path escapes the image root through \"..\"")
	errBadName     = errors.New("invalid name")
)

// CleanEntryPath normalizes a tar entry name to a path relative to the image
// root. Leading "/" and "./" are dropped and inner ".." components are
// resolved, as tar and containerd do; a name that would climb above the root
// is refused rather than clamped, because clamping would silently put the
// entry somewhere its author did not intend.
func CleanEntryPath(name string) (string, error) {
	if len(name) > maxPathLen {
		return "", fmt.Errorf("%w: path is %d bytes, limit %d", errBadName, len(name), maxPathLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in path", errBadName)
	}
	p := path.Clean("/" + name)
	if escapes(name) {
		return "", errEscapesRoot
	}
	p = strings.TrimPrefix(p, "/")
	for _, c := range strings.Split(p, "/") {
		if len(c) > maxNameLen {
			return "", fmt.Errorf("%w: component of %d bytes, limit %d", errBadName, len(c), maxNameLen)
		}
	}
	return p, nil
}

// escapes reports whether resolving ".." in name, relative to the root,
// ever goes above the root. path.Clean("/"+name) would hide that by clamping.
func escapes(name string) bool {
	depth := 0
	for _, c := range strings.Split(strings.TrimLeft(name, "/"), "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// Whiteout markers of the OCI image layer spec.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)
