package fs

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Contents of the test images' files.
const (
	passwdContent    = "root:x:0:0:root:/root:/bin/sh\n"
	shadowContent    = "root:*:19000:0:99999:7:::\n"
	hardContent      = "one inode, three names"
	unicodeContent   = "konnichiwa\n"
	osReleaseA       = "ID=a\n"
	osReleaseB       = "ID=b\n"
	capabilityXattr  = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	userXattr        = "hello"
	notesNanoseconds = 123456789
)

var (
	notesMtime = time.Unix(1600000000, notesNanoseconds).UTC()
	epoch      = time.Unix(0, 0).UTC()
)

// testImages is image A (two layers, every kind of entry) and image B (one
// layer), with the manifest digests a stream would publish them under.
type testImages struct {
	*fixture
	a, b            digest.Digest
	viewA, viewB    *index.View
	baseA, topA, b1 digest.Digest // layer digests
}

func newTestImages(t testing.TB) *testImages {
	f := newFixture()
	im := &testImages{fixture: f, a: digest.FromString("manifest a"), b: digest.FromString("manifest b")}
	root := dirEntry("", 0o755)
	ping := fileEntry("usr/bin/ping", 0o755, "ping binary")
	ping.Xattrs = []index.Xattr{
		{Name: "security.capability", Value: []byte(capabilityXattr)},
		{Name: "user.x", Value: []byte(userXattr)},
	}
	su := fileEntry("bin/su", 0o4755, "su binary")
	wall := fileEntry("bin/wall", 0o2755, "wall binary")
	wall.GID = 5
	home := dirEntry("home/user", 0o700)
	home.UID, home.GID = 1000, 1000
	notes := fileEntry("home/user/notes.txt", 0o640, "remember the milk\n")
	notes.UID, notes.GID, notes.ModTime = 1000, 1000, notesMtime
	sda := layerEntry{Entry: index.Entry{Path: "dev/sda", Type: index.TypeBlock, Mode: 0o660, GID: 6, DevMajor: 8, DevMinor: 0}}
	im.baseA = f.layer(t, "a base",
		root,
		dirEntry("etc", 0o755),
		fileEntry("etc/passwd", 0o644, passwdContent),
		fileEntry("etc/shadow", 0o600, shadowContent),
		fileEntry("etc/nomode", 0o000, "nobody may read this\n"),
		fileEntry("etc/empty", 0o644, ""),
		dirEntry("bin", 0o755),
		su, wall,
		dirEntry("tmp", 0o1777),
		home, notes,
		dirEntry("usr", 0o755),
		dirEntry("usr/lib", 0o755),
		dirEntry("usr/bin", 0o755),
		fileEntry("usr/lib/libhard.so", 0o755, hardContent),
		layerEntry{Entry: index.Entry{Path: "usr/lib/libhard.so.1", Type: index.TypeHardlink, Linkname: "usr/lib/libhard.so"}},
		layerEntry{Entry: index.Entry{Path: "usr/bin/hardtool", Type: index.TypeHardlink, Linkname: "usr/lib/libhard.so"}},
		ping,
		layerEntry{Entry: index.Entry{Path: "lib", Type: index.TypeSymlink, Mode: 0o777, Linkname: "usr/lib"}},
		dirEntry("dev", 0o755),
		layerEntry{Entry: index.Entry{Path: "dev/null", Type: index.TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 3}},
		sda,
		layerEntry{Entry: index.Entry{Path: "dev/big", Type: index.TypeChar, Mode: 0o600, DevMajor: 300, DevMinor: 70000}},
		layerEntry{Entry: index.Entry{Path: "dev/initctl", Type: index.TypeFifo, Mode: 0o600}},
		dirEntry("ünïcødé", 0o755),
		fileEntry("ünïcødé/日本語.txt", 0o644, unicodeContent),
	)
	im.topA = f.layer(t, "a top",
		fileEntry("etc/os-release", 0o644, osReleaseA),
		// Its parents have no entries of their own.
		fileEntry("var/lib/implicit/data", 0o644, "deep\n"),
	)
	im.b1 = f.layer(t, "b",
		root,
		dirEntry("etc", 0o755),
		fileEntry("etc/os-release", 0o644, osReleaseB),
		fileEntry("etc/passwd", 0o644, passwdContent),
	)
	im.viewA = f.view(t, im.baseA, im.topA)
	im.viewB = f.view(t, im.b1)
	return im
}

// imageAOnly is the catalog state "latest → A".
func (im *testImages) imageAOnly() (map[string]digest.Digest, map[digest.Digest]*index.View) {
	return map[string]digest.Digest{"latest": im.a}, map[digest.Digest]*index.View{im.a: im.viewA}
}
