package controller

import (
	"context"
	"errors"
	"io"
	"io/fs"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/index"
)

// isPermanent tells failures tied to the bytes a source holds (a digest
// mismatch, a malformed tar or manifest, a blob that is not a file) from
// those that may pass by themselves (a blob not there yet or still being
// written, an I/O error, a registry that does not answer, a full or
// blocked state directory, a cancelled run). A permanent failure is tried again only when the blob or the set
// of sources changes; the others are retried with backoff.
func isPermanent(err error) bool {
	var readErr *blobReadError
	var storeErr *index.StoreError
	var transient *transientError
	switch {
	case err == nil,
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &readErr), errors.As(err, &storeErr), errors.As(err, &transient),
		errors.Is(err, fs.ErrNotExist), errors.Is(err, index.ErrCorrupt),
		errors.Is(err, blob.ErrUnavailable):
		return false
	case errors.Is(err, blob.ErrNotRegular):
		return true
	}
	var failures *sourceFailures
	if errors.As(err, &failures) {
		return failures.permanent()
	}
	return true
}

// transientError marks a failure that is expected to pass.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// sourceFailures collects why each source failed to provide something.
// It is permanent only when every source failed permanently.
type sourceFailures struct {
	errs []error
}

func (f *sourceFailures) Error() string   { return errors.Join(f.errs...).Error() }
func (f *sourceFailures) Unwrap() []error { return f.errs }

func (f *sourceFailures) permanent() bool {
	for _, err := range f.errs {
		if !isPermanent(err) {
			return false
		}
	}
	return len(f.errs) > 0
}

// blobReadError marks an error that reading a blob returned, as opposed
// to a fault found in the bytes read.
type blobReadError struct{ err error }

func (e *blobReadError) Error() string { return "reading blob: " + e.err.Error() }
func (e *blobReadError) Unwrap() error { return e.err }

// readTagged marks the read errors of a blob, so that an I/O error in the
// middle of a pass is retried instead of blamed on the layer's content.
type readTagged struct{ blob.Blob }

func (b readTagged) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.Blob.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &blobReadError{err}
	}
	return n, err
}
