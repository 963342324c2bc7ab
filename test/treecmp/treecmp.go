// Package treecmp compares two directory trees entry by entry, the way the
// explodefs end-to-end tests check a mounted image against a reference
// extraction (umoci unpack) of the same image.
//
// For every path it compares the file type, permission bits including
// setuid, setgid and sticky, owner, size, mtime with nanoseconds, symlink
// target, device numbers, all extended attributes, file content (sha256),
// link count, and hard-link groups (the set of paths sharing an inode must
// be the same in both trees). Symlinks are never followed.
//
// umoci 0.4.7 restores the mtimes of files, directories and symlinks, so
// there is no option to ignore them wholesale. What it cannot reproduce are
// directories that exist only as parents of other entries (it creates them
// with the process umask and the current time, and the mtime of a declared
// directory changes when such an implicit child is created in it); list
// those in Options.LooseMetadata.
package treecmp

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is the attribute in which two paths differ.
type Kind string

// The kinds of difference Compare reports.
const (
	Missing   Kind = "missing"   // in want, not in got
	Extra     Kind = "extra"     // in got, not in want
	Type      Kind = "type"      // other attributes are not compared then
	Mode      Kind = "mode"      // mode & 07777
	UID       Kind = "uid"       //
	GID       Kind = "gid"       //
	Size      Kind = "size"      // regular files and symlinks
	Mtime     Kind = "mtime"     // seconds and nanoseconds
	Target    Kind = "target"    // symlink target
	Device    Kind = "device"    // major:minor of device nodes
	Xattr     Kind = "xattr"     // one difference per attribute name
	Content   Kind = "content"   // sha256; only when sizes agree
	Nlink     Kind = "nlink"     // link count
	HardLinks Kind = "hardlinks" // paths sharing the inode
)

// Difference is one way in which got deviates from want at Path.
type Difference struct {
	Path string // relative to the tree roots, "." for the roots themselves
	Kind Kind
	Want string
	Got  string
}

func (d Difference) String() string {
	switch d.Kind {
	case Missing:
		return fmt.Sprintf("%s: missing (want %s)", d.Path, d.Want)
	case Extra:
		return fmt.Sprintf("%s: unexpected %s", d.Path, d.Got)
	}
	return fmt.Sprintf("%s: %s differs: want %s, got %s", d.Path, d.Kind, d.Want, d.Got)
}

// Report renders at most limit differences, one per line, and says how many
// more there were; limit <= 0 means all.
func Report(diffs []Difference, limit int) string {
	var b strings.Builder
	for i, d := range diffs {
		if limit > 0 && i == limit {
			fmt.Fprintf(&b, "... and %d more differences\n", len(diffs)-limit)
			break
		}
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Options relaxes the comparison. The zero value compares everything.
type Options struct {
	// IgnoreXattrs names extended attributes never compared, for example
	// "security.selinux", which a host labels on its own.
	IgnoreXattrs []string
	// LooseMetadata lists paths whose mode, owner and mtime are
	// implementation-defined, such as directories that exist only as
	// parents of other entries. Their type, xattrs and children are still
	// compared.
	LooseMetadata []string
	// IgnoreDirNlink skips the link count of directories, which depends on
	// how a filesystem counts subdirectories rather than on the image.
	IgnoreDirNlink bool
	// AllowDroppedEmptyXattrs accepts an attribute that got has with an
	// empty value and want lacks, and nothing else: umoci reads xattrs
	// through archive/tar's deprecated Header.Xattrs, which skips PAX
	// records with empty values, while explodefs shows them with 0 bytes
	// because the tar holds them.
	AllowDroppedEmptyXattrs bool
	// IgnoreMtime skips mtimes, for trees whose store keeps none (an
	// OSTree checkout).
	IgnoreMtime bool
	// IgnoreLinks skips link counts and hard-link groups of everything
	// but directories, for trees that link equal content whether or not
	// the image did (an OSTree checkout).
	IgnoreLinks bool
}

// Compare scans both trees and returns their differences sorted by path.
func Compare(want, got string, opts Options) ([]Difference, error) {
	wantTree, err := scan(want)
	if err != nil {
		return nil, fmt.Errorf("compare trees: want side: %w", err)
	}
	gotTree, err := scan(got)
	if err != nil {
		return nil, fmt.Errorf("compare trees: got side: %w", err)
	}
	c := comparison{opts: opts, want: wantTree, got: gotTree, loose: map[string]bool{}}
	for _, p := range opts.LooseMetadata {
		c.loose[strings.TrimPrefix(strings.TrimSuffix(p, "/"), "./")] = true
	}
	c.comparePaths()
	if !opts.IgnoreLinks {
		c.compareHardLinks()
	}
	slices.SortStableFunc(c.diffs, func(a, b Difference) int { return strings.Compare(a.Path, b.Path) })
	return c.diffs, nil
}

type comparison struct {
	opts      Options
	want, got tree
	loose     map[string]bool
	diffs     []Difference
}

func (c *comparison) add(p string, kind Kind, want, got any) {
	c.diffs = append(c.diffs, Difference{Path: p, Kind: kind, Want: fmt.Sprint(want), Got: fmt.Sprint(got)})
}

func (c *comparison) comparePaths() {
	for _, p := range slices.Sorted(maps.Keys(c.want)) {
		w := c.want[p]
		g, ok := c.got[p]
		if !ok {
			// Report only the topmost missing path; everything below it is
			// missing too and would bury the report.
			if p == "." || c.got[parentOf(p)] != nil {
				c.add(p, Missing, describe(w, c.want, p), "")
			}
			continue
		}
		c.compareNode(p, w, g)
	}
	for _, p := range slices.Sorted(maps.Keys(c.got)) {
		if _, ok := c.want[p]; !ok && c.want[parentOf(p)] != nil {
			c.add(p, Extra, "", describe(c.got[p], c.got, p))
		}
	}
}

func (c *comparison) compareNode(p string, w, g *node) {
	if w.fileType() != g.fileType() {
		c.add(p, Type, typeName(w.fileType()), typeName(g.fileType()))
		return
	}
	if !c.loose[p] {
		if wm, gm := w.stat.Mode&0o7777, g.stat.Mode&0o7777; wm != gm {
			c.add(p, Mode, fmt.Sprintf("%04o", wm), fmt.Sprintf("%04o", gm))
		}
		if w.stat.Uid != g.stat.Uid {
			c.add(p, UID, w.stat.Uid, g.stat.Uid)
		}
		if w.stat.Gid != g.stat.Gid {
			c.add(p, GID, w.stat.Gid, g.stat.Gid)
		}
		if w.stat.Mtim != g.stat.Mtim && !c.opts.IgnoreMtime {
			c.add(p, Mtime, formatTime(w.stat.Mtim), formatTime(g.stat.Mtim))
		}
	}
	isDir := w.fileType() == unix.S_IFDIR
	if w.stat.Nlink != g.stat.Nlink && !(isDir && c.opts.IgnoreDirNlink) && !(!isDir && c.opts.IgnoreLinks) {
		c.add(p, Nlink, w.stat.Nlink, g.stat.Nlink)
	}
	switch w.fileType() {
	case unix.S_IFREG:
		if w.stat.Size != g.stat.Size {
			c.add(p, Size, w.stat.Size, g.stat.Size)
		} else if w.sum != g.sum {
			c.add(p, Content, fmt.Sprintf("sha256:%x", w.sum), fmt.Sprintf("sha256:%x", g.sum))
		}
	case unix.S_IFLNK:
		if w.target != g.target {
			c.add(p, Target, fmt.Sprintf("%q", w.target), fmt.Sprintf("%q", g.target))
		} else if w.stat.Size != g.stat.Size {
			c.add(p, Size, w.stat.Size, g.stat.Size)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if w.stat.Rdev != g.stat.Rdev {
			c.add(p, Device, formatDevice(w.stat.Rdev), formatDevice(g.stat.Rdev))
		}
	}
	c.compareXattrs(p, w.xattrs, g.xattrs)
}

func (c *comparison) compareXattrs(p string, want, got map[string]string) {
	names := slices.Sorted(maps.Keys(want))
	for name := range got {
		if _, ok := want[name]; !ok {
			names = append(names, name)
		}
	}
	for _, name := range names {
		if slices.Contains(c.opts.IgnoreXattrs, name) {
			continue
		}
		w, inWant := want[name]
		g, inGot := got[name]
		if !inWant && inGot && g == "" && c.opts.AllowDroppedEmptyXattrs {
			continue
		}
		if inWant != inGot || w != g {
			c.add(p, Xattr, formatXattr(name, w, inWant), formatXattr(name, g, inGot))
		}
	}
}

// compareHardLinks checks that every non-directory shares its inode with
// the same set of paths in both trees, reporting each mismatch once.
func (c *comparison) compareHardLinks() {
	wantGroups, gotGroups := linkGroups(c.want), linkGroups(c.got)
	reported := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(c.want)) {
		if c.want[p].fileType() == unix.S_IFDIR || c.got[p] == nil || c.got[p].fileType() == unix.S_IFDIR {
			continue
		}
		w, g := strings.Join(wantGroups[p], ", "), strings.Join(gotGroups[p], ", ")
		if w != g && !reported[w+"\x00"+g] {
			reported[w+"\x00"+g] = true
			c.add(p, HardLinks, "["+w+"]", "["+g+"]")
		}
	}
}

// linkGroups maps each non-directory path to the sorted paths sharing its
// inode (itself included).
func linkGroups(t tree) map[string][]string {
	type inode struct{ dev, ino uint64 }
	byInode := map[inode][]string{}
	for p, n := range t {
		if n.fileType() != unix.S_IFDIR {
			key := inode{n.stat.Dev, n.stat.Ino}
			byInode[key] = append(byInode[key], p)
		}
	}
	groups := make(map[string][]string, len(t))
	for _, paths := range byInode {
		slices.Sort(paths)
		for _, p := range paths {
			groups[p] = paths
		}
	}
	return groups
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

// describe names a node's type and, for directories, how much lies below
// it, so that one Missing or Extra line conveys the size of the gap.
func describe(n *node, t tree, p string) string {
	if n.fileType() != unix.S_IFDIR {
		return typeName(n.fileType())
	}
	below := 0
	for q := range t {
		if strings.HasPrefix(q, p+"/") {
			below++
		}
	}
	return fmt.Sprintf("directory with %d entries below", below)
}

func typeName(fileType uint32) string {
	switch fileType {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %#o", fileType)
}

func formatTime(ts unix.Timespec) string { return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec) }

func formatDevice(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

func formatXattr(name, value string, present bool) string {
	if !present {
		return name + " absent"
	}
	return fmt.Sprintf("%s=%q", name, value)
}
