package blob

import (
	"fmt"
	"os"
	"syscall"

	"github.com/explodefs/explodefs/index"
)

// OpenFile opens a blob stored as a file of its own, as index.OpenRegular
// does.
// The blob is Versioned by the file's identity, size and modification
// time, so that a copy rewritten in place or replaced counts as new.
func OpenFile(name string) (Blob, error) {
	f, fi, err := index.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	return &file{File: f, info: fi}, nil
}

type file struct {
	*os.File
	info os.FileInfo
}

var _ Versioned = (*file)(nil)

func (f *file) Size() int64 { return f.info.Size() }

// Version implements Versioned: a rewritten or replaced file changes its
// inode, size or modification time.
func (f *file) Version() string {
	v := fmt.Sprintf("%d@%d", f.info.Size(), f.info.ModTime().UnixNano())
	if st, ok := f.info.Sys().(*syscall.Stat_t); ok {
		v = fmt.Sprintf("%d:%d:%s", st.Dev, st.Ino, v)
	}
	return v
}
