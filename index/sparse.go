package index

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/opencontainers/go-digest"
)

// Fragment is one stretch of a sparse file that holds data: Length bytes
// at Offset in the file, stored at Data in the layer's uncompressed stream.
// Everything of the file outside its fragments is a hole and reads as
// zeros.
type Fragment struct {
	Offset int64
	Length int64
	Data   int64
}

// LayerReader reads a layer's uncompressed stream; Reader implements it.
type LayerReader interface {
	ReadAt(ctx context.Context, layer digest.Digest, p []byte, off int64) (int, error)
}

// ReadFile reads the regular file in at off into p from its layer's
// uncompressed stream, expanding the holes of a sparse file. Like
// io.ReaderAt it returns io.EOF when p reaches past the end of the file.
func ReadFile(ctx context.Context, r LayerReader, layer digest.Digest, in *Inode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= in.Size {
		return 0, io.EOF
	}
	want := p
	if rest := in.Size - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	var n int
	var err error
	if in.Sparse == nil {
		n, err = r.ReadAt(ctx, layer, want, in.Offset+off)
	} else {
		n, err = readSparse(ctx, r, layer, in.Sparse, want, off)
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// readSparse fills p from the file offset off: fragment bytes from the
// stream, holes with zeros. The fragments are sorted and do not overlap.
func readSparse(ctx context.Context, r LayerReader, layer digest.Digest, frags []Fragment, p []byte, off int64) (int, error) {
	// The first fragment that ends after off.
	i := sort.Search(len(frags), func(i int) bool { return frags[i].Offset+frags[i].Length > off })
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if i >= len(frags) || pos < frags[i].Offset {
			// A hole up to the next fragment, or to the end of the file.
			hole := len(p) - n
			if i < len(frags) {
				hole = int(min(int64(hole), frags[i].Offset-pos))
			}
			clear(p[n : n+hole])
			n += hole
			continue
		}
		f := frags[i]
		k := int(min(int64(len(p)-n), f.Offset+f.Length-pos))
		got, err := r.ReadAt(ctx, layer, p[n:n+k], f.Data+(pos-f.Offset))
		n += got
		if got < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		i++
	}
	return n, nil
}
