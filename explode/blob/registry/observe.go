package registry

import (
	"context"
	"errors"
	"io/fs"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrorObserver hears of every request to the registry that failed, each
// attempt of a retried one included, so that a registry that fails now
// and then shows before reads fail. Requests their caller gave up on
// (a cancelled context, a closed blob) are not reported, nor is the
// missing blob that every read of a manifest by digest meets first.
type ErrorObserver interface {
	// RegistryError is given what was asked (one of the Op constants)
	// and how it failed (one of the Class constants). It must be cheap:
	// it runs on the read path.
	RegistryError(op, class string)
}

// What a failed request was for.
const (
	// OpHandshake is the auth handshake: the ping and the token.
	OpHandshake = "handshake"
	// OpBlobHead asks for a blob's size when it is opened.
	OpBlobHead = "blob_head"
	// OpBlobRead is a Range request for a blob's bytes.
	OpBlobRead = "blob_read"
	// OpManifest reads a manifest by digest.
	OpManifest = "manifest"
)

// How a request failed.
const (
	// ClassNotFound: the registry has no such blob or manifest.
	ClassNotFound = "not_found"
	// ClassClient: another 4xx answer, such as refused credentials.
	ClassClient = "4xx"
	// ClassServer: a 5xx answer.
	ClassServer = "5xx"
	// ClassConnection: no answer, a timeout, or a body cut short.
	ClassConnection = "connection"
	// ClassOther: anything else, such as a certificate that does not
	// verify or an answer that contradicts the blob.
	ClassOther = "other"
)

// try runs attempt under the retry policy and reports each failed
// attempt as op.
func (r *Registry) try(ctx context.Context, op string, attempt func(ctx context.Context) error) error {
	if r.errs == nil {
		return r.retry.do(ctx, attempt)
	}
	return r.retry.do(ctx, func(actx context.Context) error {
		err := attempt(actx)
		// A blob or manifest that is not there may be the other kind;
		// openBlobOrManifest reports it when it is neither.
		probing := op == OpBlobHead || op == OpManifest
		if err != nil && !(probing && errors.Is(err, fs.ErrNotExist)) {
			r.noteError(ctx, op, err)
		}
		return err
	})
}

// noteError reports a failed request unless its caller gave up on it
// (ctx is the caller's, not the attempt's: an attempt that timed out is
// the registry's failure).
func (r *Registry) noteError(ctx context.Context, op string, err error) {
	if r.errs == nil || err == nil || ctx.Err() != nil {
		return
	}
	r.errs.RegistryError(op, errorClass(err))
}

// errorClass sorts a request's error into one of the Class constants.
func errorClass(err error) string {
	var se *statusError
	var te *transport.Error
	var short *shortBodyError
	var conn *connError
	code := 0
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ClassNotFound
	case errors.As(err, &se):
		code = se.code
	case errors.As(err, &te):
		code = te.StatusCode
	case errors.As(err, &short), errors.As(err, &conn), errors.Is(err, context.DeadlineExceeded):
		return ClassConnection
	}
	switch {
	case code >= 500:
		return ClassServer
	case code >= 400:
		return ClassClient
	}
	return ClassOther
}
