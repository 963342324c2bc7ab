package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/explodefs/explodefs/explode/blob"
)

// retryPolicy bounds how long one request may take and how often it is
// tried.
type retryPolicy struct {
	attempts      int
	wait, maxWait time.Duration
	timeout       time.Duration
}

// do runs attempt until it succeeds, fails in a way that will not pass, or
// has been tried p.attempts times. Each attempt gets its own timeout.
func (p retryPolicy) do(ctx context.Context, attempt func(ctx context.Context) error) error {
	var err error
	for n := 1; ; n++ {
		err = p.once(ctx, attempt)
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		if n >= p.attempts {
			return &gaveUp{err: err, attempts: n}
		}
		t := time.NewTimer(p.backoff(n, err))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

func (p retryPolicy) once(ctx context.Context, attempt func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return attempt(ctx)
}

// backoff is the wait after failed attempt n: doubling, capped, with
// jitter so that readers failing together do not come back together. A
// registry that says when to come back (Retry-After) is heeded up to the
// cap.
func (p retryPolicy) backoff(n int, err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		return min(se.retryAfter, p.maxWait)
	}
	wait := p.wait
	for i := 1; i < n && wait < p.maxWait; i++ {
		wait *= 2
	}
	wait = min(wait, p.maxWait)
	return wait/2 + rand.N(wait/2+1)
}

// retryable tells failures that may pass (a server error, a timeout, a
// dropped connection, a body cut short) from all others (a missing blob,
// refused credentials, a certificate that does not verify, an answer that
// contradicts the blob's size), which a retry would only repeat.
func retryable(err error) bool {
	var se *statusError
	var short *shortBodyError
	var conn *connError
	switch {
	case errors.As(err, &se):
		return temporaryStatus(se.code)
	case errors.As(err, &short), errors.As(err, &conn):
		return true
	}
	return false
}

// fromConnection marks an error of a request that got no answer (or of
// the auth handshake, which hides what kind it was) as one that may pass,
// unless it says the registry is not who it should be or the
// configuration is wrong.
func fromConnection(err error) error {
	var te *transport.Error
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var notTLS tls.RecordHeaderError
	var conf *configError
	var scheme *schemeError
	switch {
	case errors.As(err, &te):
		if temporaryStatus(te.StatusCode) {
			return &connError{err}
		}
		return err
	case errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &badCert),
		errors.As(err, &verify), errors.As(err, &notTLS), errors.As(err, &conf), errors.As(err, &scheme):
		return err
	}
	return &connError{err}
}

// connError is a failure to get an answer: refused, reset, timed out,
// closed midway, or a registry that answered the handshake with a 5xx.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

func temporaryStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// statusError is an answer the source did not expect.
type statusError struct {
	method     string
	code       int
	retryAfter time.Duration
}

func newStatusError(method string, resp *http.Response) *statusError {
	e := &statusError{method: method, code: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.retryAfter = time.Duration(s) * time.Second
	}
	return e
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s: the registry answered %d %s", e.method, e.code, http.StatusText(e.code))
	if e.code == http.StatusUnauthorized || e.code == http.StatusForbidden {
		msg += " (credentials missing, refused or without pull access to the repository)"
	}
	return msg
}

// shortBodyError is a response that ended before all the bytes it
// promised, or that answered another range than the one asked for.
type shortBodyError struct{ err error }

func (e *shortBodyError) Error() string { return e.err.Error() }
func (e *shortBodyError) Unwrap() error { return e.err }

// schemeError is a request refused by the scheme guard.
type schemeError struct{ host, want, got string }

func (e *schemeError) Error() string {
	return fmt.Sprintf("registry %s is configured as %s, not %s", e.host, e.want, e.got)
}

// gaveUp is a failure that may pass, still there after every attempt.
type gaveUp struct {
	err      error
	attempts int
}

func (e *gaveUp) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts)", e.err, e.attempts)
}

func (e *gaveUp) Unwrap() []error { return []error{e.err, blob.ErrUnavailable} }
