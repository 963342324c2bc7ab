package registry_test

import (
	"fmt"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/explodefs/explodefs/explode/blob/registry"
)

// A small read of a big blob asks for that range only and allocates a
// few KiB, not the blob: ReadAt streams into the caller's buffer.
func TestReadAtFetchesOnlyTheRange(t *testing.T) {
	d, _, h := bigBlob(t, 16<<20)
	log := &requestLog{next: h}
	srv := httptest.NewServer(log)
	defer srv.Close()
	b, err := source(t, srv.URL).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, 4096)
	if _, err := b.ReadAt(p, 0); err != nil { // warms the connection
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const reads = 20
	for i := range reads {
		if _, err := b.ReadAt(p, int64(i)*(700<<10)+123); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	// The client's own allocations only: the in-process server's are
	// counted too, and it copies 4 KiB per read.
	perRead := (after.TotalAlloc - before.TotalAlloc) / reads
	t.Logf("%d bytes allocated per read, client and server", perRead)
	if perRead > 256<<10 {
		t.Errorf("%d bytes allocated per 4 KiB read of a 16 MiB blob", perRead)
	}
	ranges := log.rangesSeen()
	if want := fmt.Sprintf("bytes=%d-%d", 700<<10+123, 700<<10+123+4095); len(ranges) != reads+1 || ranges[2] != want {
		t.Errorf("ranges asked: %v, want one of 4 KiB per read (%s second)", ranges, want)
	}
}

// A long ReadAt is split into requests no bigger than the maximum, each
// with its own timeout.
func TestLongReadIsSplit(t *testing.T) {
	d, want, h := bigBlob(t, 3<<20)
	log := &requestLog{next: h}
	srv := httptest.NewServer(log)
	defer srv.Close()
	b, err := source(t, srv.URL, registry.WithMaxRequestSize(1<<20)).Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := make([]byte, len(want))
	if n, err := b.ReadAt(p, 0); n != len(p) || (err != nil && err.Error() != "EOF") {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if got := log.rangesSeen(); len(got) != 3 || got[1] != "bytes=1048576-2097151" {
		t.Errorf("ranges asked: %v, want three of 1 MiB", got)
	}
}
