package registry_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob/registry"
	testregistry "github.com/explodefs/explodefs/test/registry"
)

// BenchmarkColdRandomRead4K reads 4 KiB at random offsets of a 64 MiB
// blob from a loopback registry, each read a Range request of its own
// (the source caches nothing), and reports the latency percentiles. The
// goal in issue 6 is p50 ≤ 10 ms.
//
//	go test -run '^$' -bench ColdRandomRead4K -benchtime 2000x ./explode/blob/registry/
func BenchmarkColdRandomRead4K(b *testing.B) {
	const size = 64 << 20
	b.Run("in-process-https-basic", func(b *testing.B) {
		d, _, h := bigBlob(b, size)
		srv := httptest.NewTLSServer(basicAuth("puller", "secret-password", h))
		defer srv.Close()
		src := source(b, srv.URL, registry.WithCAFile(writeCA(b, srv)),
			registry.WithAuthenticator(&authn.Basic{Username: "puller", Password: "secret-password"}))
		benchRandomReads(b, src, d, size)
	})
	b.Run("docker-registry-https-htpasswd", func(b *testing.B) {
		r := testregistry.Start(b, testregistry.WithTLSAndAuth())
		d, content, _ := bigBlob(b, size)
		pushToReal(b, r, d, content)
		kc, err := registry.AuthFile(r.AuthFile)
		if err != nil {
			b.Fatal(err)
		}
		src := source(b, r.URL(), registry.WithCAFile(r.CAFile), registry.WithKeychain(kc))
		benchRandomReads(b, src, d, size)
	})
	b.Run("docker-registry-http-anonymous", func(b *testing.B) {
		r := testregistry.Start(b)
		d, content, _ := bigBlob(b, size)
		pushToReal(b, r, d, content)
		benchRandomReads(b, source(b, r.URL()), d, size)
	})
}

func benchRandomReads(b *testing.B, src *registry.Source, d digest.Digest, size int64) {
	blob, err := src.Open(b.Context(), d)
	if err != nil {
		b.Fatal(err)
	}
	defer blob.Close()
	p := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	lat := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for b.Loop() {
		off := r.Int64N(size - int64(len(p)))
		start := time.Now()
		if _, err := blob.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkFirstRead measures a cold start: a new registry client, its
// auth handshake, the HEAD of Open and one 4 KiB read, over a new TLS
// connection each time.
func BenchmarkFirstRead(b *testing.B) {
	d, _, h := bigBlob(b, 1<<20)
	srv := httptest.NewTLSServer(basicAuth("puller", "secret-password", h))
	defer srv.Close()
	ca := writeCA(b, srv)
	p := make([]byte, 4096)
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		reg, err := registry.New(srv.URL, registry.WithCAFile(ca),
			registry.WithAuthenticator(&authn.Basic{Username: "puller", Password: "secret-password"}))
		if err != nil {
			b.Fatal(err)
		}
		src, _ := reg.Repository(repo)
		blob, err := src.Open(b.Context(), d)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := blob.ReadAt(p, 12345); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		blob.Close()
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkSequentialRead reads a 64 MiB blob from start to end in the
// sizes the index uses: 256 KiB (the layer pass's input buffer) and
// 64 KiB (the lazy reader's gzip input), reporting MB/s.
//
//	go test -run '^$' -bench SequentialRead ./explode/blob/registry/
func BenchmarkSequentialRead(b *testing.B) {
	const size = 64 << 20
	for _, chunk := range []int{256 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("in-process-https/%dKiB", chunk>>10), func(b *testing.B) {
			d, _, h := bigBlob(b, size)
			srv := httptest.NewTLSServer(h)
			defer srv.Close()
			benchSequential(b, source(b, srv.URL, registry.WithCAFile(writeCA(b, srv))), d, size, chunk)
		})
		b.Run(fmt.Sprintf("docker-registry-https-htpasswd/%dKiB", chunk>>10), func(b *testing.B) {
			r := testregistry.Start(b, testregistry.WithTLSAndAuth())
			d, content, _ := bigBlob(b, size)
			pushToReal(b, r, d, content)
			kc, err := registry.AuthFile(r.AuthFile)
			if err != nil {
				b.Fatal(err)
			}
			benchSequential(b, source(b, r.URL(), registry.WithCAFile(r.CAFile), registry.WithKeychain(kc)), d, size, chunk)
		})
	}
}

func benchSequential(b *testing.B, src *registry.Source, d digest.Digest, size int64, chunk int) {
	blob, err := src.Open(b.Context(), d)
	if err != nil {
		b.Fatal(err)
	}
	defer blob.Close()
	p := make([]byte, chunk)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		for off := int64(0); off < size; off += int64(chunk) {
			if _, err := blob.ReadAt(p, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}
