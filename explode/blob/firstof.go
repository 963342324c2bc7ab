package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/explodefs/explodefs/index"
	"github.com/opencontainers/go-digest"
)

// FirstOf returns a Source that opens each blob from the first of srcs
// that opens it: a registry's file storage first, say, and its HTTP API
// for the pull-through blobs the storage does not hold yet.
//
// Any failure to open moves on to the next source, not only a missing
// blob: a storage that cannot be read now (permissions, an I/O error) is
// no reason to fail a blob another source serves. A copy that opens but
// turns out bad on its content is not looked past: a caller that wants
// the next source for that case lists the sources itself.
func FirstOf(srcs ...Source) Source {
	return &firstOf{srcs: append([]Source(nil), srcs...)}
}

type firstOf struct {
	srcs []Source
}

// String names every source in order, so that two FirstOf sources are
// told apart from each other and from each of their members.
func (f *firstOf) String() string {
	names := make([]string, len(f.srcs))
	for i, s := range f.srcs {
		names[i] = s.String()
	}
	return "first-of(" + strings.Join(names, ", ") + ")"
}

func (f *firstOf) Open(ctx context.Context, d digest.Digest) (Blob, error) {
	if len(f.srcs) == 0 {
		return nil, fmt.Errorf("blob %s: no source to open it from: %w", d, fs.ErrNotExist)
	}
	var errs []error
	for i, s := range f.srcs {
		b, err := s.Open(ctx, d)
		if err == nil {
			return &memberBlob{Blob: b, member: i}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("blob %s from %s: %w", d, s, err)
		}
		errs = append(errs, err)
	}
	return nil, &allFailed{errs: errs}
}

// memberBlob tells which member opened a blob in its version, so that
// copies from two members never pass for one another.
type memberBlob struct {
	Blob
	member int
}

var (
	_ Versioned       = (*memberBlob)(nil)
	_ index.ReadSizer = (*memberBlob)(nil)
)

// ReadSize passes on the member blob's preferred read size.
func (b *memberBlob) ReadSize() int {
	if rs, ok := b.Blob.(index.ReadSizer); ok {
		return rs.ReadSize()
	}
	return 0
}

func (b *memberBlob) Version() string {
	v := VersionOf(b.Blob)
	if v == "" {
		return ""
	}
	return fmt.Sprintf("%d/%s", b.member, v)
}

// allFailed is the failure of every member. It wraps fs.ErrNotExist only
// when no member has the blob at all; otherwise it wraps the other
// failures, which say more than "missing" does.
type allFailed struct {
	errs []error
}

func (e *allFailed) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e *allFailed) Unwrap() []error {
	var other []error
	for _, err := range e.errs {
		if !errors.Is(err, fs.ErrNotExist) {
			other = append(other, err)
		}
	}
	if len(other) == 0 {
		return e.errs
	}
	return other
}
