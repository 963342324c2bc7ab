package imagegen

import (
	"fmt"
	"strings"
)

// SparseLayers makes one layer per format with GNU tar (see GNUTarSparse),
// each holding SparseSamples under a directory named after its format.
// Compressions cycle through gzip, uncompressed tar and multi-member gzip,
// so fragments also straddle gzip members.
func SparseLayers(scratch string, formats ...SparseFormat) ([]Layer, error) {
	compressions := []Compression{Gzip, Uncompressed, GzipMultiMember}
	var layers []Layer
	for i, f := range formats {
		raw, err := GNUTarSparse(scratch, f, SparseSamples(string(f)))
		if err != nil {
			return nil, err
		}
		layers = append(layers, Layer{Compression: compressions[i%len(compressions)], RawTar: raw,
			CreatedBy: fmt.Sprintf("GNU tar, sparse files in format %s", f)})
	}
	return layers, nil
}

// EmptyXattrLayer has extended attributes whose value is empty (user.empty
// on xattrs/empty-value, trusted.empty on xattrs/dir-with-empty), which
// umoci drops and explodefs shows with 0 bytes, beside an ordinary one and
// a file without any.
func EmptyXattrLayer() Layer {
	return Layer{Compression: Gzip, CreatedBy: "xattrs with empty values", Entries: Entries(
		Dir("xattrs", 0o755),
		File("xattrs/empty-value", 0o644, String("an xattr without a value\n")).
			WithXattr("user.empty", nil).WithXattr("user.full", []byte("full")),
		Dir("xattrs/dir-with-empty", 0o755).WithXattr("trusted.empty", nil),
		File("xattrs/none", 0o644, String("no xattrs at all\n")),
	)}
}

// WhiteoutDirsImage puts entries below directories whose names start with
// ".wh.", which the OCI image spec reserves for markers: "x/" whited out
// by a ".wh.x/" directory entry that also has a child, "keep/.wh.sub/f",
// an entry below an opaque marker's name, and ordinary files beside them.
// explodefs leaves such entries out; umoci creates the directories.
func WhiteoutDirsImage() Image {
	lower := Layer{Compression: Gzip, Entries: Entries(
		Dir("x", 0o755),
		File("x/old", 0o644, String("whited out by .wh.x\n")),
		Dir("keep", 0o755),
		File("keep/file", 0o644, String("stays\n")),
	)}
	upper := Layer{Compression: Gzip, Entries: Entries(
		Dir(".wh.x", 0o755),
		File(".wh.x/child", 0o644, String("would show a directory named .wh.x\n")),
		File("keep/.wh.sub/f", 0o644, String("below a .wh. directory\n")),
		File("keep/.wh..wh..opq/f", 0o644, String("below an opaque marker's name\n")),
		File("keep/new", 0o644, String("an ordinary file of the upper layer\n")),
	)}
	return SingleImage(lower, upper)
}

// BadXattrImages are refused for their extended attributes, each naming
// the layer and the entry.
func BadXattrImages() []BadImage {
	return []BadImage{BadXattrFakeName(), BadXattrNamespace(), XattrBomb()}
}

// BadXattrFakeName has a LIBARCHIVE record whose URL-encoded name holds a
// NUL: "user.a%00security.capability" would list as two names, the second
// a fake security.capability.
func BadXattrFakeName() BadImage {
	fake := File("bin/fake-cap", 0o755, String("#!/bin/sh\n"))
	fake.Header.PAXRecords = map[string]string{"LIBARCHIVE.xattr.user.a%00security.capability": "AQAAAgAgAAAAAAAAAAAAAAAAAAA="}
	layer := Layer{Compression: Gzip, Entries: Entries(File("ok", 0o644, String("fine\n")), fake)}
	return BadImage{Name: "bad-xattr-nul-name", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "extended attribute"}
}

// BadXattrNamespace has an xattr outside the namespaces Linux knows.
func BadXattrNamespace() BadImage {
	layer := Layer{Compression: Gzip, Entries: Entries(
		File("odd", 0o644, String("odd\n")).WithXattr("capability", []byte("x")),
	)}
	return BadImage{Name: "bad-xattr-namespace", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "namespaces"}
}

// XattrBombFiles and XattrBombValue size XattrBomb: each value is within
// the kernel's 64 KiB, 18 MiB in all, from a blob of tens of KiB.
const (
	XattrBombFiles = 300
	XattrBombValue = 60 << 10
)

// XattrBomb is a small gzip layer whose repetitive xattr values add up to
// more than a layer may hold; it must be refused, not held in memory.
func XattrBomb() BadImage {
	value := []byte(strings.Repeat("bomb", XattrBombValue/4))
	entries := make([]Entry, XattrBombFiles)
	for i := range entries {
		entries[i] = File(fmt.Sprintf("bomb/f%04d", i), 0o644, nil).WithXattr("user.v", value)
	}
	layer := Layer{Compression: Gzip, Entries: Entries(entries...)}
	return BadImage{Name: "bad-xattr-bomb", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "extended attributes exceed"}
}
