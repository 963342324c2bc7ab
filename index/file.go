package index

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrNotRegular reports a path that is not a regular file. Such a file is
// refused rather than read, because reading a FIFO or a device could block
// a worker forever.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens a file for reading and refuses anything but a regular
// file with ErrNotRegular. The open itself does not block: opening a FIFO
// for reading would otherwise wait for a writer that never comes. Blob
// sources, layouts' index.json and the reader's decompressed copies all
// open their files through it.
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
