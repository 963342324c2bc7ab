package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"testing"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/index"
)

// Failures that may pass are retried with backoff; failures tied to the
// bytes wait for the bytes to change.
func TestIsPermanent(t *testing.T) {
	layer := "sha256:" + fmt.Sprintf("%064d", 0)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"digest mismatch", &index.LayerError{Err: index.ErrDigestMismatch}, true},
		{"malformed tar", &index.EntryError{Path: "x", Err: io.ErrUnexpectedEOF}, true},
		{"not a regular file", fmt.Errorf("blob: %w", blob.ErrNotRegular), true},
		{"missing blob", fmt.Errorf("open: %w", fs.ErrNotExist), false},
		{"registry unavailable", fmt.Errorf("gave up: %w", blob.ErrUnavailable), false},
		{"read error mid-pass", &index.EntryError{Err: &blobReadError{syscall.EIO}}, false},
		{"disk full", &index.StoreError{Err: syscall.ENOSPC}, false},
		{"damaged index", fmt.Errorf("layer %s: %w", layer, index.ErrCorrupt), false},
		{"cancelled", context.Canceled, false},
		{"one source bad, one missing", &sourceFailures{errs: []error{index.ErrDigestMismatch, fs.ErrNotExist}}, false},
		{"every source bad", &sourceFailures{errs: []error{index.ErrDigestMismatch, &unchangedBadCopy{"x"}}}, true},
	} {
		if got := isPermanent(tc.err); got != tc.want {
			t.Errorf("%s (%v): permanent %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	if isPermanent(nil) || !isPermanent(errors.New("anything else")) {
		t.Error("nil must not be permanent; unknown errors are")
	}
}
