package blobtest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults says how often a FaultProxy breaks a request, each a share of
// the requests it passes (0 to 1; they add up to at most 1).
type Faults struct {
	// ServerError answers 503 without asking the upstream.
	ServerError float64
	// CutShort sends the upstream's headers, promising the whole body,
	// then half the body, then drops the connection.
	CutShort float64
	// Stall waits before answering until the client gives up or StallFor
	// passes; StallBody does the same after half the body.
	Stall, StallBody float64
	// StallFor bounds a stall (a minute if zero), so that a client
	// without a timeout still ends.
	StallFor time.Duration
	// IgnoreRange drops the Range header, as a server that does not do
	// ranges would: the whole blob comes back with 200.
	IgnoreRange float64
	// ShiftRange asks the upstream for the range one byte earlier than
	// the client asked, as a broken cache might; its Content-Range tells.
	// A range from byte 0 is passed as it is.
	ShiftRange float64
	// Seed makes the choice of faults repeatable.
	Seed uint64
	// Affects picks the requests that may be broken; nil means blob
	// requests (/v2/<repository>/blobs/<digest>).
	Affects func(*http.Request) bool
}

// Fault names what a FaultProxy did to a request.
type Fault string

// The faults a FaultProxy injects, as counted by Injected.
const (
	None        Fault = "none"
	ServerError Fault = "server-error"
	CutShort    Fault = "cut-short"
	Stall       Fault = "stall"
	StallBody   Fault = "stall-body"
	IgnoreRange Fault = "ignore-range"
	ShiftRange  Fault = "shift-range"
)

// FaultProxy is an HTTP reverse proxy that breaks a share of the requests
// it passes to a registry, the way networks, load balancers and caches
// break them. A blob source behind it must return the right bytes or an
// error, never wrong bytes. Serve it with httptest.NewServer.
type FaultProxy struct {
	upstream  *url.URL
	transport http.RoundTripper
	faults    Faults

	mu  sync.Mutex
	rnd *rand.Rand

	counts sync.Map // Fault → *atomic.Int64
}

// NewFaultProxy returns a proxy to upstream (scheme://host[:port]) that
// sends its requests through transport (http.DefaultTransport if nil).
func NewFaultProxy(upstream string, transport http.RoundTripper, f Faults) (*FaultProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fault proxy upstream %q: want scheme://host[:port]", upstream)
	}
	if transport == nil {
		transport = http.DefaultTransport
	}
	if f.StallFor == 0 {
		f.StallFor = time.Minute
	}
	if f.Affects == nil {
		f.Affects = isBlobRequest
	}
	return &FaultProxy{upstream: u, transport: transport, faults: f, rnd: rand.New(rand.NewPCG(f.Seed, 0x5eed))}, nil
}

func isBlobRequest(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/v2/") && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// Injected returns how many requests got each fault, None included.
func (p *FaultProxy) Injected() map[Fault]int64 {
	out := map[Fault]int64{}
	p.counts.Range(func(k, v any) bool {
		out[k.(Fault)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

func (p *FaultProxy) count(f Fault) {
	c, _ := p.counts.LoadOrStore(f, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

func (p *FaultProxy) pick(r *http.Request) Fault {
	if !p.faults.Affects(r) {
		return None
	}
	p.mu.Lock()
	x := p.rnd.Float64()
	p.mu.Unlock()
	f := p.faults
	for _, c := range []struct {
		share float64
		fault Fault
	}{
		{f.ServerError, ServerError}, {f.CutShort, CutShort}, {f.Stall, Stall}, {f.StallBody, StallBody},
		{f.IgnoreRange, IgnoreRange}, {f.ShiftRange, ShiftRange},
	} {
		if x < c.share {
			return c.fault
		}
		x -= c.share
	}
	return None
}

// ServeHTTP implements http.Handler.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fault := p.pick(r)
	first, last, ranged := parseRange(r.Header.Get("Range"))
	if fault == ShiftRange && (!ranged || first == 0) {
		fault = None
	}
	p.count(fault)
	switch fault {
	case ServerError:
		http.Error(w, "injected fault", http.StatusServiceUnavailable)
		return
	case Stall:
		if !p.stall(r) {
			return
		}
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = p.upstream.Scheme, p.upstream.Host, p.upstream.Host
	switch fault {
	case IgnoreRange:
		out.Header.Del("Range")
	case ShiftRange:
		out.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first-1, last-1))
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, "fault proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if (fault == CutShort || fault == StallBody) && resp.ContentLength > 1 && r.Method == http.MethodGet {
		io.CopyN(w, resp.Body, resp.ContentLength/2)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		if fault == StallBody {
			p.stall(r)
		}
		// Drops the connection without ending the body: the client
		// sees fewer bytes than Content-Length promised.
		panic(http.ErrAbortHandler)
	}
	io.Copy(w, resp.Body)
}

// stall waits for the client to give up or StallFor to pass, and says
// whether the client is still there.
func (p *FaultProxy) stall(r *http.Request) bool {
	t := time.NewTimer(p.faults.StallFor)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		return false
	case <-t.C:
		return true
	}
}

func parseRange(h string) (first, last int64, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	return first, last, err1 == nil && err2 == nil
}
