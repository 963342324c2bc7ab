package blob

import (
	"fmt"
	"os"
	"syscall"
)

// OpenRegular opens a file for reading and refuses anything but a regular
// file with ErrNotRegular. The open itself does not block: opening a FIFO
// for reading would otherwise wait for a writer that never comes.
func OpenRegular(name string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w (%s)", name, ErrNotRegular, fi.Mode().Type())
	}
	return f, fi, nil
}

// OpenFile opens a blob stored as a file of its own, as OpenRegular does.
// The blob is Versioned by the file's identity, size and modification
// time, so that a copy rewritten in place or replaced counts as new.
func OpenFile(name string) (Blob, error) {
	f, fi, err := OpenRegular(name)
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
