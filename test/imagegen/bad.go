package imagegen

import (
	"archive/tar"
	"bytes"
	"fmt"
	"iter"
	"strings"
)

// Outcome is what a correct implementation must do with a bad-input image.
type Outcome int

const (
	// MustRefuse: the image is not served; the stream reports an error
	// whose reason names the layer (digest) and, where there is one, the
	// tar entry, and contains the BadImage's Reason keyword.
	MustRefuse Outcome = iota
	// RefuseOrSanitize: refusing as for MustRefuse is correct; so is
	// serving a sanitized tree, as the image's doc comment describes.
	RefuseOrSanitize
	// MustServe: the image is valid, merely extreme; it must be served.
	MustServe
)

// BadImage is an image each of whose problems is isolated in its own
// stream, together with what a correct implementation does with it.
type BadImage struct {
	Name    string // stream name
	Image   Image
	Outcome Outcome
	// Reason is a keyword the refusal reason must contain (case-insensitive);
	// empty for MustServe.
	Reason string
}

// BadImages lists every bad-input image; manyEntries is passed to
// ManyEntries (0 means its default).
func BadImages(manyEntries int) []BadImage {
	return []BadImage{TruncatedGzip(), DigestMismatch(), LyingTarSize(), EscapingPaths(), BadHardlinks(), DeepPath(), ManyEntries(manyEntries)}
}

// TruncatedGzip has a gzip layer cut in the middle of its deflate stream.
// The manifest carries the digest and size of the cut blob, so the digest
// check passes and the error must come from decompression: the image must
// be refused, naming the layer.
func TruncatedGzip() BadImage {
	layer := Layer{Compression: Gzip, Damage: TruncateBlob, Entries: Entries(
		File("first.txt", 0o644, Text(1, 300<<10)),
		File("second.bin", 0o644, Binary(2, 300<<10, 50)),
	)}
	return BadImage{Name: "bad-truncated-gzip", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "unexpected EOF"}
}

// DigestMismatch stores, under the layer's digest, bytes that do not hash
// to it (one byte of the gzip header's MTIME differs; the blob still
// decompresses to the intended tar). Only digest verification can notice,
// and a correct implementation must: the image is refused, naming the layer.
func DigestMismatch() BadImage {
	layer := Layer{Compression: Gzip, Damage: MismatchDigest, Entries: Entries(
		File("looks-fine.txt", 0o644, String("but the blob is not what the manifest promised\n")),
	)}
	return BadImage{Name: "bad-digest-mismatch", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "digest"}
}

// LyingTarSize has a tar entry whose header promises 10000 bytes while the
// archive ends after 3000 of them, with no end-of-archive blocks. The gzip
// stream itself is intact. The image must be refused, naming the layer and
// the entry "liar.bin"; serving a short or zero-padded file is wrong.
func LyingTarSize() BadImage {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	honest := []byte("this entry is fine\n")
	// Errors are impossible here: bytes.Buffer does not fail, and the
	// headers are valid. Writing stops short of the promised size on
	// purpose and the tar.Writer is never closed, which is the corruption.
	_ = tw.WriteHeader(&tar.Header{Name: "before.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(honest)), ModTime: BaseTime(), Format: tar.FormatPAX})
	_, _ = tw.Write(honest)
	_ = tw.WriteHeader(&tar.Header{Name: "liar.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10000, ModTime: BaseTime(), Format: tar.FormatPAX})
	_, _ = tw.Write(bytes.Repeat([]byte("x"), 3000))
	layer := Layer{Compression: Gzip, RawTar: bytes.Clone(buf.Bytes())}
	return BadImage{Name: "bad-lying-tar-size", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "unexpected EOF"}
}

// EscapingPaths names entries outside the root ("../../etc/evil",
// "/abs/path/file", "a/../../b") and writes through symlinks that point
// outside it: "link" -> "../../../../etc" followed by "link/passwd" in the
// next layer, and "inlayer-link" -> "/etc" followed by "inlayer-link/shadow"
// in the same layer.
//
// A correct implementation refuses the image (reason containing
// "escapes"), or serves a sanitized tree: names are cleaned lexically
// inside the root ("../../etc/evil" -> "etc/evil", "/abs/path/file" ->
// "abs/path/file", "a/../../b" -> "b"), and a symlink is never resolved
// while placing an entry, so "link/passwd" is not placed at "etc/passwd"
// and nothing on the host is ever read or written.
func EscapingPaths() BadImage {
	lower := Layer{Compression: Gzip, Entries: Entries(
		Dir("ok", 0o755),
		File("ok/fine.txt", 0o644, String("an ordinary file\n")),
		File("../../etc/evil", 0o644, String("escaped upwards\n")),
		File("/abs/path/file", 0o644, String("absolute name\n")),
		File("a/../../b", 0o644, String("escaped through a dot-dot in the middle\n")),
		Symlink("link", "../../../../etc"),
		Symlink("inlayer-link", "/etc"),
		File("inlayer-link/shadow", 0o600, String("written through a symlink of the same layer\n")),
	)}
	upper := Layer{Compression: Gzip, Entries: Entries(
		File("link/passwd", 0o644, String("root::0:0::/:/bin/sh\n")),
	)}
	return BadImage{Name: "bad-escaping-paths", Image: SingleImage(lower, upper), Outcome: RefuseOrSanitize, Reason: "escapes"}
}

// BadHardlinks has a hard link to a name no layer provides and one whose
// target "../../etc/passwd" lies outside the root (and, cleaned, names
// nothing in the image either). Neither can be materialised as a link to
// image content, so the image must be refused, naming the entry; serving
// host files through the second link would be a security hole.
func BadHardlinks() BadImage {
	layer := Layer{Compression: Gzip, Entries: Entries(
		File("real.txt", 0o644, String("the only real file\n")),
		Hardlink("dangling", "does/not/exist"),
		Hardlink("escape", "../../etc/passwd"),
	)}
	return BadImage{Name: "bad-hardlinks", Image: SingleImage(layer), Outcome: MustRefuse, Reason: "link"}
}

// DeepPathDepth is the nesting of DeepPath: 1000 five-byte components make
// the leaf's path 5000+ bytes, beyond PATH_MAX (4096).
const DeepPathDepth = 1000

// DeepPath nests DeepPathDepth directories, each with its own entry, and
// puts a file at the bottom. Every component is short, so the tree is
// reachable by per-component lookups; a correct implementation serves it,
// or refuses it with a reason containing "too long". It must not crash or
// truncate names.
func DeepPath() BadImage {
	var entries []Entry
	var dir strings.Builder
	for i := range DeepPathDepth {
		fmt.Fprintf(&dir, "d%03d/", i)
		entries = append(entries, Dir(dir.String(), 0o755))
	}
	entries = append(entries, File(dir.String()+"leaf.txt", 0o644, String("at the bottom\n")))
	layer := Layer{Compression: Gzip, Entries: Entries(entries...)}
	return BadImage{Name: "bad-deep-path", Image: SingleImage(layer), Outcome: RefuseOrSanitize, Reason: "too long"}
}

// DefaultManyEntries is the file count of ManyEntries(0).
const DefaultManyEntries = 300_000

// ManyEntries is one layer with n files (every tenth has a few bytes, the
// rest are empty) spread over 100 groups of up to 30 directories each. It
// is valid and must be served; it measures per-entry costs.
func ManyEntries(n int) BadImage {
	if n <= 0 {
		n = DefaultManyEntries
	}
	layer := Layer{Compression: Gzip, Entries: manyEntries(n)}
	return BadImage{Name: "many-entries", Image: SingleImage(layer), Outcome: MustServe}
}

// manyEntries generates the entries on the fly: 300,000 headers held in
// memory would cost more than the tar does.
func manyEntries(n int) iter.Seq[Entry] {
	const groups, dirsPerGroup = 100, 30
	return func(yield func(Entry) bool) {
		if !yield(Dir("many", 0o755)) {
			return
		}
		for i := range n {
			group := i % groups
			dir := fmt.Sprintf("many/g%02d/d%02d", group, (i/groups)%dirsPerGroup)
			// Files are dealt round-robin over the groups, so the first
			// groups*dirsPerGroup files each open a new directory and the
			// first groups files also open a new group.
			if i < groups && !yield(Dir(fmt.Sprintf("many/g%02d", group), 0o755)) {
				return
			}
			if i < groups*dirsPerGroup && !yield(Dir(dir, 0o755)) {
				return
			}
			var content Content
			if i%10 == 0 {
				content = String(fmt.Sprintf("file %d\n", i))
			}
			if !yield(File(fmt.Sprintf("%s/f%06d", dir, i), 0o644, content)) {
				return
			}
		}
	}
}
