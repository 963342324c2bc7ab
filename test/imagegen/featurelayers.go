package imagegen

import (
	"archive/tar"
	"slices"
	"strings"
	"time"
)

// Long names force the extended encodings: a single component longer than
// the 100-byte USTAR name field (so the prefix split cannot help), and link
// targets longer than the 100-byte linkname field.
func longComponent() string { return strings.Repeat("long-name-component-", 7) + "end" }
func paxLongName() string   { return "names/pax-" + longComponent() + ".txt" }
func gnuLongName() string   { return "names/gnu-" + longComponent() + ".txt" }
func longTarget() string    { return "../" + strings.Repeat("far-away-target/", 8) + "file" }

// baseLayer (layer 0) lays down every kind of entry plus the lower-layer
// state that the upper layers whiteout, hide or change the type of.
func baseLayer(opts FeatureOptions) []Entry {
	f := Features()
	text := func(n int64, salt uint64) Content { return Text(opts.Seed+salt, n) }
	return slices.Concat([]Entry{
		Dir("etc", 0o755),
		File("etc/hosts", 0o644, String("127.0.0.1 localhost\n")),
		File("etc/passwd", 0o644, String("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")),
		Dir("bin", 0o755),
		File(f.SetuidFile, 0o4755, Binary(opts.Seed+1, 9000, 60)),
		File("bin/setgid-tool", 0o2755, Binary(opts.Seed+2, 7000, 60)),
		Dir("tmp", 0o1777),
		Dir("shared", 0o2775).Owned(0, 1000),

		Dir("modes", 0o755),
		File("modes/none", 0o000, String("nobody may read this\n")),
		File("modes/private", 0o600, String("private\n")),
		File("modes/everything", 0o7777, String("all bits\n")),

		Dir("owners", 0o755),
		File("owners/root", 0o644, String("root\n")).Owned(0, 0),
		File("owners/user", 0o644, String("user\n")).Owned(1000, 1000),
		File("owners/nobody", 0o644, String("nobody\n")).Owned(65534, 65534),
		File("owners/big-ids", 0o644, String("big\n")).Owned(100000, 100000),
		Dir("owners/home", 0o700).Owned(1000, 1000),

		Dir("links", 0o755),
		Symlink("links/relative", "../etc/hosts"),
		Symlink("links/absolute", "/etc/passwd"),
		Symlink("links/dangling", "nowhere/at/all"),
		Symlink("links/dir-link", "../etc"),
		Symlink("links/pax-long-target", longTarget()),
		Symlink("links/gnu-long-target", longTarget()+"-gnu").InFormat(tar.FormatGNU),

		Dir("hardlinks", 0o755),
		File(f.HardLinkGroup[0], 0o640, String("one inode, several names\n")).Owned(1000, 1000),
		Hardlink(f.HardLinkGroup[1], f.HardLinkGroup[0]),
		Hardlink("hardlinks/third", f.HardLinkGroup[0]),

		Dir("dev", 0o755),
		CharDevice(f.CharDevice, 0o666, 1, 3),
		BlockDevice(f.BlockDevice, 0o660, 8, 0).Owned(0, 6),
		Fifo("dev/fifo", 0o644),
		Fifo("dev/private-fifo", 0o600).Owned(1000, 1000),

		Dir("xattrs", 0o755).WithXattr("user.dirattr", []byte("on a directory")),
		File("xattrs/user-foo", 0o644, String("has user.foo\n")).WithXattr("user.foo", []byte("bar")),
		File("xattrs/binary-value", 0o644, String("binary xattr\n")).WithXattr("user.binary", []byte{0, 1, 2, 0xff, 0xfe}),
		File(f.CapabilityFile, 0o755, Binary(opts.Seed+3, 5000, 60)).
			WithXattr("security.capability", NetBindServiceCapability()),

		Dir("sizes", 0o755),
		File("sizes/empty", 0o644, nil),
		File("sizes/exactly-512", 0o644, text(512, 10)),
		File("sizes/exactly-1MiB", 0o644, text(1<<20, 11)),
		File("sizes/block-plus-one", 0o644, text(513, 12)),

		Dir("names", 0o755),
		File("names/héllo-wörld-日本語.txt", 0o644, String("utf-8 name\n")),
		Dir("names/with spaces", 0o755),
		File("names/with spaces/file name with spaces.txt", 0o644, String("spaces\n")),
		File(paxLongName(), 0o644, String("long PAX name\n")),
		File(gnuLongName(), 0o644, String("long GNU name\n")).InFormat(tar.FormatGNU),
		Hardlink("names/gnu-hardlink-to-long-name", gnuLongName()).InFormat(tar.FormatGNU),
	}, dirChain("names", "deep-dir", 20), []Entry{
		// More than 255 bytes of path in short components: USTAR's prefix
		// field cannot hold it, so PAX records the path.
		File("names/"+strings.Repeat("deep-dir/", 20)+"deep-file.txt", 0o644, String("long path, short components\n")),

		// No entries for implicit/, implicit/a/ ...: the parents exist only
		// because a file is under them.
		File("implicit/a/b/c/file", 0o644, String("parents never declared\n")),
		File("implicit/x/y/other", 0o644, String("another one\n")),

		Dir("dup", 0o755),
		File(f.DuplicateFile, 0o600, String("first version, must lose\n")),
		File("dup/other", 0o644, String("between the duplicates\n")),
		File(f.DuplicateFile, 0o640, String(f.DuplicateWinner)),

		Dir("wh", 0o755),
		File(f.WhitedOutFile, 0o644, String("deleted by a whiteout above\n")),
		File("wh/keep.txt", 0o644, String("survives\n")),
		Dir(f.WhitedOutDir, 0o755),
		File(f.WhitedOutDir+"/a.txt", 0o644, String("gone with the dir\n")),
		Dir(f.WhitedOutDir+"/sub", 0o755),
		File(f.WhitedOutDir+"/sub/b.txt", 0o644, String("gone too\n")),

		Dir(f.OpaqueDir, 0o755),
		File(f.OpaqueHidden[0], 0o644, String("hidden by the opaque marker\n")),
		Dir("opaque/oldsub", 0o755),
		File(f.OpaqueHidden[1], 0o644, String("hidden as well\n")),
		Dir("opaque-late", 0o755),
		File("opaque-late/old", 0o644, String("hidden by a marker that comes late\n")),

		Dir("tc", 0o755),
		File("tc/file2dir", 0o644, String("becomes a directory\n")),
		Dir("tc/dir2file", 0o755),
		File("tc/dir2file/child", 0o644, String("disappears with its directory\n")),
		Dir("tc/dir2link", 0o755),
		File("tc/dir2link/child", 0o644, String("disappears, the dir becomes a symlink\n")),
		Symlink("tc/link2file", "../etc/hosts"),
		Dir("tc/target", 0o755),
		File("tc/target/reached", 0o644, String("through tc/dir2link\n")),
	})
}

// dirChain declares parent/component, parent/component/component, ... n
// levels deep.
func dirChain(parent, component string, n int) []Entry {
	entries := make([]Entry, n)
	for i := range entries {
		parent += "/" + component
		entries[i] = Dir(parent, 0o755)
	}
	return entries
}

// dotSlashLayer (layer 1) names every entry with a "./" prefix, as many
// image builders do, and performs the opaque and type-change operations.
func dotSlashLayer(opts FeatureOptions) []Entry {
	f := Features()
	entries := []Entry{
		Dir(".", 0o755),
		Dir("etc", 0o755),
		File("etc/hosts", 0o644, String("127.0.0.1 localhost\n::1 localhost\n")),
		File("etc/hostname", 0o644, String("features\n")),

		Dir(f.OpaqueDir, 0o755),
		Opaque(f.OpaqueDir),
		File(f.OpaqueVisible[0], 0o644, String("added next to the opaque marker\n")),
		Dir("opaque/newsub", 0o755),
		File(f.OpaqueVisible[1], 0o644, String("also new\n")),
		// Whiteouts apply to lower layers only, whatever their position in
		// this layer; an extractor that applies them in order would wrongly
		// delete this file.
		File("opaque-late/new-before-marker", 0o644, String("must survive the later marker\n")),
		Opaque("opaque-late"),

		Dir("tc/file2dir", 0o750),
		File("tc/file2dir/inner.txt", 0o644, String("inside what used to be a file\n")),
		File("tc/dir2file", 0o644, String("used to be a directory\n")),
		Symlink("tc/dir2link", "target"),

		Dir("big", 0o755),
		File(f.BigFile, 0o644, Text(opts.Seed+20, opts.bigFileSize())),

		Dir("hl2", 0o755),
		File("hl2/orig", 0o644, String("hard link target named with ./\n")),
		Hardlink("hl2/link", "./hl2/orig"),
	}
	for i := range entries {
		entries[i].Header.Name = "./" + strings.TrimPrefix(entries[i].Header.Name, "./")
	}
	return entries
}

// upperLayer (layer 2) deletes with whiteouts, links to a lower file and
// replaces lower entries.
func upperLayer(opts FeatureOptions) []Entry {
	f := Features()
	return []Entry{
		Whiteout(f.WhitedOutFile),
		Whiteout(f.WhitedOutDir),
		Whiteout("wh/never-existed"),
		// Removing one name of the group leaves the others linked.
		Whiteout("hardlinks/third"),
		Hardlink(f.HardLinkGroup[2], f.HardLinkGroup[0]),
		File("tc/link2file", 0o600, String("used to be a symlink\n")),
		File("modes/private", 0o640, String("replaced in the upper layer\n")).Owned(1000, 1000),
		File("upper-only.txt", 0o644, Text(opts.Seed+30, 3000)),
	}
}

// withDistinctMtimes gives every entry its own mtime so that an
// implementation taking metadata from the wrong entry or layer is caught.
// Sub-second parts are dropped for GNU entries, which cannot encode them.
func withDistinctMtimes(entries []Entry, base time.Time) []Entry {
	for i := range entries {
		t := base.Add(time.Duration(i) * (61*time.Second + 7654321*time.Nanosecond))
		if entries[i].Header.Format == tar.FormatGNU {
			t = t.Truncate(time.Second)
		}
		entries[i].Header.ModTime = t
	}
	return entries
}
