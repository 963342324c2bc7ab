package imagegen

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// SparseFormat is one of the four ways GNU tar stores a sparse file.
type SparseFormat string

// GNU tar's sparse formats: the three PAX ones and the old GNU 'S' type.
const (
	SparsePAX00  SparseFormat = "pax-0.0"
	SparsePAX01  SparseFormat = "pax-0.1"
	SparsePAX10  SparseFormat = "pax-1.0"
	SparseOldGNU SparseFormat = "gnu"
)

// SparseFormats lists every SparseFormat.
func SparseFormats() []SparseFormat {
	return []SparseFormat{SparsePAX00, SparsePAX01, SparsePAX10, SparseOldGNU}
}

// Chunk is a stretch of data in a HoleyFile.
type Chunk struct {
	Offset int64
	Data   []byte
}

// HoleyFile is a file of Size bytes that holds Chunks and is a hole
// everywhere else. A file with one chunk covering it all is dense, and GNU
// tar stores it as a plain regular file.
type HoleyFile struct {
	Name   string
	Mode   os.FileMode
	Size   int64
	Chunks []Chunk
}

// GNUTarSparse makes real sparse files (truncate, then write the chunks)
// under scratch and archives them with GNU tar in format, in the order
// given, each preceded by its parent directories. Owners are 0:0 and every
// mtime is 2024-03-01 12:00 UTC.
//
// GNU tar finds holes with SEEK_HOLE, so scratch must be on a filesystem
// with sparse files (ext4, xfs, btrfs, tmpfs); callers check that the
// result really is sparse. The archive is not byte-for-byte reproducible:
// GNU tar puts its process id in the names of sparse headers.
func GNUTarSparse(scratch string, format SparseFormat, files []HoleyFile) ([]byte, error) {
	tarPath, err := exec.LookPath("tar")
	if err != nil {
		return nil, fmt.Errorf("GNU tar: %w", err)
	}
	dir, err := os.MkdirTemp(scratch, "sparse-src-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var names []string
	seen := map[string]bool{}
	for _, f := range files {
		for _, d := range parents(f.Name) {
			if !seen[d] {
				seen[d] = true
				names = append(names, d)
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					return nil, err
				}
			}
		}
		if err := writeHoleyFile(filepath.Join(dir, f.Name), f); err != nil {
			return nil, err
		}
		names = append(names, f.Name)
	}
	args := []string{"--sparse", "--numeric-owner", "--owner=0", "--group=0",
		"--mtime=@1709294400", "--no-recursion", "-C", dir, "-c", "-f", "-"}
	switch format {
	case SparsePAX00, SparsePAX01, SparsePAX10:
		args = append(args, "--format=pax", "--sparse-version="+strings.TrimPrefix(string(format), "pax-"),
			"--pax-option=delete=atime,delete=ctime")
	case SparseOldGNU:
		args = append(args, "--format=gnu")
	default:
		return nil, fmt.Errorf("unknown sparse format %q", format)
	}
	// Names after "--" so none is taken for an option.
	args = append(append(args, "--"), names...)
	var out, stderr bytes.Buffer
	cmd := exec.Command(tarPath, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", tarPath, strings.Join(args, " "), err, stderr.String())
	}
	return out.Bytes(), nil
}

func writeHoleyFile(p string, f HoleyFile) error {
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	file, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	defer file.Close()
	if err := file.Truncate(f.Size); err != nil {
		return err
	}
	for _, c := range f.Chunks {
		if c.Offset < 0 || c.Offset+int64(len(c.Data)) > f.Size {
			return fmt.Errorf("%s: chunk %d+%d outside the file's %d bytes", f.Name, c.Offset, len(c.Data), f.Size)
		}
		if _, err := file.WriteAt(c.Data, c.Offset); err != nil {
			return err
		}
	}
	// The umask may have cut the mode.
	if err := file.Chmod(mode); err != nil {
		return err
	}
	return file.Close()
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var out []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

// SparseSamples are holey files under dir that exercise every part of a
// sparse map:
// holes at the start, middle and end, no data at all, more fragments than
// one header holds (GNU extension blocks, a 1.0 map of several blocks), a
// name too long for a plain header, and dense files after them whose bytes
// would show through if a sparse file were served from its stored size.
func SparseSamples(dir string) []HoleyFile {
	many := HoleyFile{Name: dir + "/many-fragments", Size: 300 * 64 << 10}
	for i := range 300 {
		if i%3 != 1 {
			many.Chunks = append(many.Chunks, Chunk{Offset: int64(i) * 64 << 10, Data: []byte(fmt.Sprintf("fragment %03d\n", i))})
		}
	}
	long := dir + "/" + strings.Repeat("a-rather-long-directory-name/", 4) + "holey"
	return []HoleyFile{
		{Name: dir + "/middle-hole", Size: 1 << 20, Chunks: []Chunk{
			{Offset: 0, Data: mustRead(Text(11, 10_000))},
			{Offset: 700 << 10, Data: mustRead(Binary(12, 20_000, 50))},
		}},
		{Name: dir + "/leading-and-trailing-holes", Size: 3 << 20, Chunks: []Chunk{{Offset: 1 << 20, Data: []byte("in the middle of nothing\n")}}},
		{Name: dir + "/data-at-end", Size: 2 << 20, Chunks: []Chunk{{Offset: 2<<20 - 5, Data: []byte("last\n")}}},
		{Name: dir + "/all-hole", Size: 5 << 20},
		many,
		{Name: long, Size: 1 << 20, Chunks: []Chunk{{Offset: 512 << 10, Data: []byte("long name\n")}}},
		{Name: dir + "/secret", Mode: 0o600, Size: 64, Chunks: []Chunk{{Offset: 0, Data: bytes.Repeat([]byte("S"), 64)}}},
		{Name: dir + "/after", Size: 13, Chunks: []Chunk{{Offset: 0, Data: []byte("dense after\n\n")}}},
	}
}

// mustRead materializes small generated content; generators write to
// memory without failing.
func mustRead(c Content) []byte {
	b, err := ReadAll(c)
	if err != nil {
		panic(fmt.Sprintf("generating content: %v", err))
	}
	return b
}
