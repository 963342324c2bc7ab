package imagegen

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Multi-member gzip splitting: a member every multiMemberChunk bytes of tar,
// but never fewer than minMembers members, so even a small layer exercises
// member boundaries.
const (
	multiMemberChunk = 256 << 10
	minMembers       = 3
)

// writtenLayer describes a layer blob now stored in the layout.
type writtenLayer struct {
	digest digest.Digest
	size   int64
	diffID digest.Digest // sha256 of the uncompressed tar
}

// writeLayer streams the layer's tar through its compressor into a blob
// file, hashing both sides on the way, applies the requested damage and
// moves the blob to its content address.
func writeLayer(blobDir string, l Layer) (writtenLayer, error) {
	tmp, err := os.CreateTemp(blobDir, ".layer-*")
	if err != nil {
		return writtenLayer{}, fmt.Errorf("create layer temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	defer tmp.Close()

	blobHash := sha256.New()
	buffered := bufio.NewWriterSize(tmp, 1<<20)
	blob := &countingWriter{w: io.MultiWriter(buffered, blobHash)}
	diffHash := sha256.New()

	if err := compressLayer(blob, diffHash, l, blobDir); err != nil {
		return writtenLayer{}, fmt.Errorf("write %s layer: %w", l.Compression, err)
	}
	if err := buffered.Flush(); err != nil {
		return writtenLayer{}, fmt.Errorf("flush layer blob: %w", err)
	}
	result := writtenLayer{
		digest: digest.NewDigest(digest.SHA256, blobHash),
		size:   blob.n,
		diffID: digest.NewDigest(digest.SHA256, diffHash),
	}
	if result, err = damageBlob(tmp, result, l); err != nil {
		return writtenLayer{}, err
	}
	// CreateTemp makes the file 0600; blobs are meant to be world-readable
	// like every other file of the layout.
	if err := tmp.Chmod(0o644); err != nil {
		return writtenLayer{}, fmt.Errorf("chmod layer blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return writtenLayer{}, fmt.Errorf("close layer blob: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(blobDir, result.digest.Encoded())); err != nil {
		return writtenLayer{}, fmt.Errorf("store layer blob: %w", err)
	}
	return result, nil
}

// compressLayer writes the compressed tar to blob and the uncompressed tar
// to diffHash.
func compressLayer(blob io.Writer, diffHash hash.Hash, l Layer, spoolDir string) error {
	switch l.Compression {
	case Uncompressed:
		return writeTar(io.MultiWriter(blob, diffHash), l)
	case Gzip:
		gz, err := kgzip.NewWriterLevel(blob, kgzip.DefaultCompression)
		if err != nil {
			return fmt.Errorf("create gzip writer: %w", err)
		}
		if err := writeTar(io.MultiWriter(gz, diffHash), l); err != nil {
			return err
		}
		if err := gz.Close(); err != nil {
			return fmt.Errorf("finish gzip stream: %w", err)
		}
		return nil
	case Zstd:
		// One encoder goroutine keeps the frame layout independent of the
		// machine's core count.
		zw, err := zstd.NewWriter(blob, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("create zstd writer: %w", err)
		}
		if err := writeTar(io.MultiWriter(zw, diffHash), l); err != nil {
			zw.Close()
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("finish zstd stream: %w", err)
		}
		return nil
	case GzipMultiMember:
		return writeMultiMemberGzip(blob, diffHash, l, spoolDir)
	}
	return fmt.Errorf("unknown compression %v", l.Compression)
}

// writeMultiMemberGzip first spools the tar to disk, because the member size
// depends on the tar's total size (at least minMembers members), and then
// compresses fixed-size chunks as independent members. Chunk boundaries
// deliberately ignore tar block boundaries.
func writeMultiMemberGzip(blob io.Writer, diffHash hash.Hash, l Layer, spoolDir string) error {
	spool, err := os.CreateTemp(spoolDir, ".spool-*")
	if err != nil {
		return fmt.Errorf("create tar spool: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()

	spoolBuf := bufio.NewWriterSize(spool, 1<<20)
	counted := &countingWriter{w: io.MultiWriter(spoolBuf, diffHash)}
	if err := writeTar(counted, l); err != nil {
		return err
	}
	if err := spoolBuf.Flush(); err != nil {
		return fmt.Errorf("flush tar spool: %w", err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind tar spool: %w", err)
	}

	chunk := min(int64(multiMemberChunk), (counted.n+minMembers-1)/minMembers)
	source := bufio.NewReaderSize(spool, 1<<20)
	for remaining := counted.n; remaining > 0; remaining -= chunk {
		gz, err := kgzip.NewWriterLevel(blob, kgzip.DefaultCompression)
		if err != nil {
			return fmt.Errorf("create gzip member writer: %w", err)
		}
		if _, err := io.CopyN(gz, source, min(chunk, remaining)); err != nil {
			return fmt.Errorf("compress gzip member: %w", err)
		}
		if err := gz.Close(); err != nil {
			return fmt.Errorf("finish gzip member: %w", err)
		}
	}
	return nil
}

// writeTar writes the layer's uncompressed tar stream.
func writeTar(w io.Writer, l Layer) error {
	if l.RawTar != nil {
		if l.Entries != nil {
			return fmt.Errorf("layer sets both Entries and RawTar")
		}
		if _, err := w.Write(l.RawTar); err != nil {
			return fmt.Errorf("write raw tar: %w", err)
		}
		return nil
	}
	if l.Entries == nil {
		return fmt.Errorf("layer has neither Entries nor RawTar")
	}
	tw := tar.NewWriter(w)
	for entry := range l.Entries {
		if err := writeEntry(tw, entry); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish tar: %w", err)
	}
	return nil
}

func writeEntry(tw *tar.Writer, e Entry) error {
	hdr := e.Header
	if hdr.Typeflag == tar.TypeReg {
		hdr.Size = 0
		if e.Content != nil {
			hdr.Size = e.Content.Size()
		}
	} else if e.Content != nil {
		return fmt.Errorf("tar entry %q: content given for non-regular type %q", hdr.Name, hdr.Typeflag)
	}
	if err := tw.WriteHeader(&hdr); err != nil {
		return fmt.Errorf("tar header for %q: %w", hdr.Name, err)
	}
	if e.Content == nil {
		return nil
	}
	n, err := e.Content.WriteTo(tw)
	if err != nil {
		return fmt.Errorf("tar content for %q: %w", hdr.Name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("tar content for %q: generated %d bytes, declared %d", hdr.Name, n, hdr.Size)
	}
	return nil
}

// damageBlob applies l.Damage to the finished blob file and returns the
// descriptor values the manifest must carry.
func damageBlob(f *os.File, w writtenLayer, l Layer) (writtenLayer, error) {
	switch l.Damage {
	case Intact:
		return w, nil
	case TruncateBlob:
		w.size /= 2
		if err := f.Truncate(w.size); err != nil {
			return w, fmt.Errorf("truncate layer blob: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return w, fmt.Errorf("rewind truncated blob: %w", err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return w, fmt.Errorf("hash truncated blob: %w", err)
		}
		w.digest = digest.NewDigest(digest.SHA256, h)
		return w, nil
	case MismatchDigest:
		offset := w.size - 1
		if l.Compression == Gzip || l.Compression == GzipMultiMember {
			offset = 4 // low byte of the first member's MTIME
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, offset); err != nil {
			return w, fmt.Errorf("read blob byte to corrupt: %w", err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, offset); err != nil {
			return w, fmt.Errorf("corrupt blob byte: %w", err)
		}
		return w, nil
	}
	return w, fmt.Errorf("unknown damage %d", l.Damage)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
