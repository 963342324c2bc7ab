package zran

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// mixedData returns n deterministic bytes that look like a layer: runs of
// text, of random bytes, and of repeats, so deflate picks varied blocks.
func mixedData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := make([]string, 400)
	for i := range words {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = byte('a' + rng.IntN(26))
		}
		words[i] = string(w)
	}
	buf := make([]byte, 0, n+64<<10)
	for len(buf) < n {
		switch k := rng.IntN(10); {
		case k < 6:
			end := len(buf) + 1 + rng.IntN(64<<10)
			for len(buf) < end {
				buf = append(buf, words[rng.IntN(len(words))]...)
				if rng.IntN(12) == 0 {
					buf = append(buf, '\n')
				} else {
					buf = append(buf, ' ')
				}
			}
		case k < 9:
			m := 1 + rng.IntN(32<<10)
			for range m {
				buf = append(buf, byte(rng.Uint32()))
			}
		default:
			m := 1 + rng.IntN(16<<10)
			b := byte(rng.Uint32())
			for range m {
				buf = append(buf, b)
			}
		}
	}
	return buf[:n]
}

// member is one gzip member of a test stream, as produced.
type member struct {
	cStart, cEnd int64 // compressed range
	oStart, oEnd int64 // uncompressed range
}

// stream is a compressed blob with the data it decodes to and its members.
type stream struct {
	name    string
	blob    []byte
	plain   []byte
	members []member
	padding int // zero bytes after the last member
}

type memberSpec struct {
	data       []byte
	level      int
	flushEvery int  // call Flush (sync marker) every this many bytes; 0: never
	header     bool // set name, comment and extra fields
	system     string
}

func buildStream(t testing.TB, name string, specs []memberSpec, padding int) *stream {
	t.Helper()
	s := &stream{name: name}
	for _, sp := range specs {
		var comp []byte
		if sp.system != "" {
			comp = systemGzip(t, sp.system, sp.data)
		} else {
			var b bytes.Buffer
			w, err := gzip.NewWriterLevel(&b, sp.level)
			if err != nil {
				t.Fatal(err)
			}
			if sp.header {
				w.Name, w.Comment, w.Extra = "file.tar", "a comment", []byte("extra-field")
			}
			data := sp.data
			for len(data) > 0 {
				k := len(data)
				if sp.flushEvery > 0 {
					k = min(k, sp.flushEvery)
				}
				if _, err := w.Write(data[:k]); err != nil {
					t.Fatal(err)
				}
				if sp.flushEvery > 0 {
					if err := w.Flush(); err != nil {
						t.Fatal(err)
					}
				}
				data = data[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			comp = b.Bytes()
		}
		s.members = append(s.members, member{
			cStart: int64(len(s.blob)), cEnd: int64(len(s.blob) + len(comp)),
			oStart: int64(len(s.plain)), oEnd: int64(len(s.plain) + len(sp.data)),
		})
		s.blob = append(s.blob, comp...)
		s.plain = append(s.plain, sp.data...)
	}
	s.blob = append(s.blob, make([]byte, padding)...)
	s.padding = padding
	return s
}

func systemGzip(t testing.TB, flag string, data []byte) []byte {
	t.Helper()
	cmd := exec.Command("gzip", "-c", "-n", flag)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gzip %s: %v", flag, err)
	}
	return out
}

var (
	streamsOnce sync.Once
	streamsVal  []*stream
)

// testStreams builds the corpus once; building it with gzip -9 is not free.
func testStreams(t *testing.T) []*stream {
	streamsOnce.Do(func() {
		big := mixedData(1, 6<<20)
		small := func(i int) []byte { return mixedData(uint64(100+i), 1+i*37%3000) }
		var tiny []memberSpec
		for i := range 1500 {
			tiny = append(tiny, memberSpec{data: small(i), level: 1 + i%9})
		}
		zeros := make([]byte, 12<<20)
		streamsVal = []*stream{
			buildStream(t, "go-default", []memberSpec{{data: big, level: gzip.DefaultCompression}}, 0),
			buildStream(t, "go-level1", []memberSpec{{data: big, level: 1}}, 0),
			buildStream(t, "go-level9", []memberSpec{{data: big[:3<<20], level: 9}}, 0),
			buildStream(t, "go-stored", []memberSpec{{data: big[:2<<20], level: gzip.NoCompression}}, 0),
			buildStream(t, "go-huffman", []memberSpec{{data: big[:2<<20], level: gzip.HuffmanOnly}}, 0),
			buildStream(t, "go-flushes", []memberSpec{{data: big[:3<<20], level: 6, flushEvery: 50000, header: true}}, 0),
			buildStream(t, "multi", []memberSpec{
				{data: big[:1<<20], level: 6, header: true},
				{data: nil, level: 6},
				{data: big[1<<20 : 3<<20], level: 1},
				{data: big[3<<20 : 3<<20+5000], level: 0},
				{data: big[3<<20+5000 : 5<<20], level: 9, flushEvery: 300000},
				{data: nil, level: 1},
			}, 0),
			buildStream(t, "tiny-members", tiny, 0),
			buildStream(t, "zeros-huge-blocks", []memberSpec{{data: zeros, level: 9}}, 0),
		}
		if _, err := exec.LookPath("gzip"); err != nil {
			t.Log("no gzip binary: skipping streams made by gzip(1)")
			return
		}
		streamsVal = append(streamsVal,
			buildStream(t, "system-gzip-6", []memberSpec{{data: big, system: "-6"}}, 0),
			buildStream(t, "system-gzip-1", []memberSpec{{data: big[:3<<20], system: "-1"}}, 0),
			buildStream(t, "system-and-go-padded", []memberSpec{
				{data: big[:2<<20], system: "-9"},
				{data: big[2<<20 : 4<<20], level: 5},
				{data: zeros[:3<<20], system: "-6"},
			}, 1000),
		)
	})
	if streamsVal == nil {
		t.Fatal("building test streams failed")
	}
	return streamsVal
}

// runIndexer indexes blob and returns the output and the checkpoints.
func runIndexer(t testing.TB, blob []byte, spacing int64, bufSize int) ([]byte, []Checkpoint, error) {
	t.Helper()
	var cps []Checkpoint
	x, err := NewIndexer(bytes.NewReader(blob), spacing, func(c Checkpoint) error {
		cps = append(cps, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var out bytes.Buffer
	buf := make([]byte, bufSize)
	for {
		n, err := x.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			if got := x.CompressedBytesRead(); got != int64(len(blob)) {
				t.Errorf("CompressedBytesRead = %d at EOF, want %d", got, len(blob))
			}
			return out.Bytes(), cps, nil
		}
		if err != nil {
			return out.Bytes(), cps, err
		}
		if n == 0 {
			t.Fatal("Read returned 0, nil")
		}
	}
}

func (s *stream) memberOf(c Checkpoint) (member, bool) {
	for _, m := range s.members {
		if c.MemberStart && c.In == m.cStart || !c.MemberStart && c.In > m.cStart && c.In <= m.cEnd {
			return m, true
		}
	}
	return member{}, false
}

func TestIndexer(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			// With spacing 1 every distinct boundary is a checkpoint, which
			// tells which spans could have been split.
			_, all, err := runIndexer(t, s.blob, 1, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, spacing := range []int64{1 << 20, 100 << 10, 1} {
				bufSize := []int{1 << 20, 32 << 10, 4099}[len(s.name)%3]
				out, cps, err := runIndexer(t, s.blob, spacing, bufSize)
				if err != nil {
					t.Fatalf("spacing %d: %v", spacing, err)
				}
				if !bytes.Equal(out, s.plain) {
					t.Fatalf("spacing %d: output differs from input (%d vs %d bytes)", spacing, len(out), len(s.plain))
				}
				checkCheckpoints(t, s, cps, all, spacing)
				t.Logf("spacing %d: %d checkpoints (%d boundaries)", spacing, len(cps), len(all))
			}
		})
	}
}

func checkCheckpoints(t *testing.T, s *stream, cps, all []Checkpoint, spacing int64) {
	t.Helper()
	if len(cps) == 0 {
		t.Fatal("no checkpoints")
	}
	if c := cps[0]; c.Out != 0 || c.In != 0 || c.Bits != 0 || !c.MemberStart || len(c.Window) != 0 {
		t.Fatalf("first checkpoint %+v", c)
	}
	end := int64(len(s.plain))
	for i, c := range cps {
		if i > 0 && (c.Out <= cps[i-1].Out || c.In <= cps[i-1].In) {
			t.Fatalf("checkpoint %d (out %d in %d) not after previous (out %d in %d)", i, c.Out, c.In, cps[i-1].Out, cps[i-1].In)
		}
		if c.Out >= end && end > 0 {
			t.Fatalf("checkpoint %d at out %d, at or past the end %d", i, c.Out, end)
		}
		m, ok := s.memberOf(c)
		if !ok {
			t.Fatalf("checkpoint %d (in %d) is in no member", i, c.In)
		}
		if c.MemberStart {
			if c.Bits != 0 || len(c.Window) != 0 || c.Out != m.oStart || s.blob[c.In] != 0x1f || s.blob[c.In+1] != 0x8b {
				t.Fatalf("bad member-start checkpoint %d: out %d in %d bits %d window %d", i, c.Out, c.In, c.Bits, len(c.Window))
			}
			continue
		}
		if c.Bits > 7 {
			t.Fatalf("checkpoint %d: bits %d", i, c.Bits)
		}
		wantLen := min(WindowSize, c.Out-m.oStart)
		if int64(len(c.Window)) != wantLen {
			t.Fatalf("checkpoint %d at out %d: window %d bytes, want %d", i, c.Out, len(c.Window), wantLen)
		}
		if !bytes.Equal(c.Window, s.plain[c.Out-wantLen:c.Out]) {
			t.Fatalf("checkpoint %d at out %d: window content wrong", i, c.Out)
		}
	}
	// A span longer than spacing is only allowed when no boundary lies
	// inside it.
	for i := range cps {
		lo, hi := cps[i].Out, end
		if i+1 < len(cps) {
			hi = cps[i+1].Out
		}
		if hi-lo <= spacing {
			continue
		}
		for _, b := range all {
			if b.Out > lo && b.Out < hi {
				t.Fatalf("span [%d,%d) is %d > spacing %d bytes but boundary at %d could split it", lo, hi, hi-lo, spacing, b.Out)
			}
		}
	}
	// And no block-boundary checkpoint is superfluous.
	for i := 1; i < len(cps); i++ {
		if cps[i].MemberStart {
			continue
		}
		next := end
		if i+1 < len(cps) {
			next = cps[i+1].Out
		}
		if next-cps[i-1].Out <= spacing {
			t.Fatalf("checkpoint %d at %d is superfluous: neighbours %d and %d are within spacing %d", i, cps[i].Out, cps[i-1].Out, next, spacing)
		}
	}
}

func TestReaderFromCheckpoints(t *testing.T) {
	for _, s := range testStreams(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			_, cps, err := runIndexer(t, s.blob, 256<<10, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			blob := bytes.NewReader(s.blob)
			size := int64(len(s.blob))
			for i, c := range cps {
				// Read whole to the end from the first, a middle and the last
				// checkpoint; a few hundred KB from the others.
				limit := int64(300 << 10)
				if i == 0 || i == len(cps)/2 || i == len(cps)-1 {
					limit = -1
				}
				checkTail(t, blob, size, c, s.plain, c.Out, limit)
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(s.blob))))
			for range 40 {
				if len(s.plain) == 0 {
					break
				}
				off := rng.Int64N(int64(len(s.plain)))
				c := cps[0]
				for _, cc := range cps {
					if cc.Out <= off {
						c = cc
					}
				}
				checkTail(t, blob, size, c, s.plain, off, 64<<10)
			}
		})
	}
}

// checkTail reads from checkpoint c, skips to off, and compares limit bytes
// (all the rest if limit < 0) with plain.
func checkTail(t *testing.T, blob io.ReaderAt, size int64, c Checkpoint, plain []byte, off, limit int64) {
	t.Helper()
	r, err := NewReader(blob, size, c)
	if err != nil {
		t.Fatalf("NewReader(out %d in %d): %v", c.Out, c.In, err)
	}
	defer r.Close()
	if _, err := io.CopyN(io.Discard, r, off-c.Out); err != nil {
		t.Fatalf("checkpoint out %d in %d bits %d: skipping to %d: %v", c.Out, c.In, c.Bits, off, err)
	}
	want := plain[off:]
	var got []byte
	if limit < 0 {
		got, err = io.ReadAll(r)
	} else {
		want = want[:min(int64(len(want)), limit)]
		got = make([]byte, len(want))
		_, err = io.ReadFull(r, got)
	}
	if err != nil {
		t.Fatalf("checkpoint out %d in %d bits %d: reading at %d: %v", c.Out, c.In, c.Bits, off, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("checkpoint out %d in %d bits %d: data at %d differs (%d vs %d bytes)", c.Out, c.In, c.Bits, off, len(got), len(want))
	}
}

// withTimeout fails the test instead of hanging when f does not return.
func withTimeout(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("hung")
	}
}

func TestIndexerTruncated(t *testing.T) {
	s := testStreams(t)[6] // multi
	rng := rand.New(rand.NewPCG(3, 4))
	cuts := []int{1, 2, 9, 10, 15, len(s.blob) - 1, len(s.blob) - 8, len(s.blob) - 4}
	for _, m := range s.members {
		cuts = append(cuts, int(m.cEnd)-1, int(m.cStart)+1, int(m.cStart)+12)
	}
	for range 20 {
		cuts = append(cuts, 1+rng.IntN(len(s.blob)-1))
	}
	ends := map[int]bool{}
	for _, m := range s.members {
		ends[int(m.cEnd)] = true
	}
	for _, cut := range cuts {
		if ends[cut] {
			continue // a complete stream
		}
		withTimeout(t, 20*time.Second, func() {
			_, _, err := runIndexer(t, s.blob[:cut], 1<<20, 64<<10)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("cut at %d: err = %v, want io.ErrUnexpectedEOF", cut, err)
			} else if !strings.Contains(err.Error(), "offset") {
				t.Errorf("cut at %d: error %q names no offset", cut, err)
			}
		})
	}
}

func TestIndexerEmpty(t *testing.T) {
	_, _, err := runIndexer(t, nil, 1<<20, 4096)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("empty input: err = %v", err)
	}
}

func TestIndexerCorrupt(t *testing.T) {
	s := testStreams(t)[0]
	rng := rand.New(rand.NewPCG(5, 6))
	for range 30 {
		// Stay clear of the header, whose mtime and OS bytes are free.
		pos := 20 + rng.IntN(len(s.blob)-20)
		blob := bytes.Clone(s.blob)
		blob[pos] ^= 1 << rng.IntN(8)
		withTimeout(t, 20*time.Second, func() {
			_, _, err := runIndexer(t, blob, 1<<20, 64<<10)
			if err == nil {
				t.Errorf("flipping a bit at %d: no error", pos)
			} else if !strings.Contains(err.Error(), "offset") {
				t.Errorf("flipping a bit at %d: error %q names no offset", pos, err)
			}
		})
	}
	_, _, err := runIndexer(t, []byte("not a gzip stream at all"), 1<<20, 64<<10)
	if err == nil || !strings.Contains(err.Error(), "incorrect header check") {
		t.Errorf("garbage: err = %v, want zlib's header message", err)
	}
}

func TestIndexerTrailingData(t *testing.T) {
	s := testStreams(t)[0]
	for _, tail := range [][]byte{{0, 0, 0, 1}, []byte("junk"), {0x1f}} {
		_, _, err := runIndexer(t, append(bytes.Clone(s.blob), tail...), 1<<20, 64<<10)
		if err == nil {
			t.Errorf("tail %q: no error", tail)
		}
	}
}

func TestIndexerCallbackError(t *testing.T) {
	s := testStreams(t)[0]
	boom := errors.New("boom")
	calls := 0
	x, err := NewIndexer(bytes.NewReader(s.blob), 64<<10, func(Checkpoint) error {
		calls++
		if calls == 3 {
			return boom
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, x)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if calls != 3 {
		t.Fatalf("callback ran %d times after failing", calls)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}

func TestNewIndexerBadSpacing(t *testing.T) {
	if _, err := NewIndexer(bytes.NewReader(nil), 0, nil); err == nil {
		t.Fatal("spacing 0 accepted")
	}
}

// oneByteReader hands out one byte per Read, to exercise refills at every
// position.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestIndexerSlowReader(t *testing.T) {
	s := buildStream(t, "small-multi", []memberSpec{
		{data: mixedData(9, 200<<10), level: 6},
		{data: mixedData(10, 100<<10), level: 1, flushEvery: 7000},
	}, 3)
	_, want, err := runIndexer(t, s.blob, 16<<10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got []Checkpoint
	x, err := NewIndexer(oneByteReader{bytes.NewReader(s.blob)}, 16<<10, func(c Checkpoint) error {
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	out, err := io.ReadAll(x)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, s.plain) {
		t.Fatal("output differs")
	}
	if len(got) != len(want) {
		t.Fatalf("%d checkpoints with a slow reader, %d with a fast one", len(got), len(want))
	}
	for i := range got {
		if got[i].Out != want[i].Out || got[i].In != want[i].In || got[i].Bits != want[i].Bits || !bytes.Equal(got[i].Window, want[i].Window) {
			t.Fatalf("checkpoint %d differs: %+v vs %+v", i, got[i].Out, want[i].Out)
		}
	}
}

func TestReaderErrors(t *testing.T) {
	s := testStreams(t)[0]
	_, cps, err := runIndexer(t, s.blob, 512<<10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var c Checkpoint
	for _, cc := range cps {
		if !cc.MemberStart && cc.Bits != 0 {
			c = cc
			break
		}
	}
	if c.In == 0 {
		t.Fatal("no checkpoint with pending bits")
	}
	size := int64(len(s.blob))

	// A blob cut short must fail, not hang.
	for _, cut := range []int64{c.In + 10, size - 4, size - 12} {
		withTimeout(t, 20*time.Second, func() {
			r, err := NewReader(bytes.NewReader(s.blob[:cut]), cut, c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			_, err = io.Copy(io.Discard, r)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("cut at %d: err = %v", cut, err)
			}
		})
	}
	// A blob shorter than it claims.
	r, err := NewReader(bytes.NewReader(s.blob[:c.In+100]), size, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short ReaderAt: err = %v", err)
	}
	r.Close()
	r.Close()

	// Garbage: any outcome but a hang or a crash.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		blob := bytes.Clone(s.blob)
		for range 1 + rng.IntN(5) {
			blob[c.In+rng.Int64N(size-c.In)] = byte(rng.Uint32())
		}
		withTimeout(t, 20*time.Second, func() {
			r, err := NewReader(bytes.NewReader(blob), size, c)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, io.LimitReader(r, 64<<20))
			r.Close()
		})
	}

	bad := []Checkpoint{
		{In: size + 1},
		{In: -1},
		{In: 10, Bits: 8},
		{In: 0, Bits: 3},
		{In: 10, Window: make([]byte, WindowSize+1)},
		{In: 10, MemberStart: true, Bits: 1},
	}
	for _, b := range bad {
		if _, err := NewReader(bytes.NewReader(s.blob), size, b); err == nil {
			t.Errorf("NewReader accepted %+v", b)
		}
	}
	// A member-start checkpoint that points at no member.
	r, err = NewReader(bytes.NewReader(s.blob), size, Checkpoint{In: 5, MemberStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err == nil {
		t.Error("reading a member start that is not one succeeded")
	}
	r.Close()
}

func Example() {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(bytes.Repeat([]byte("explodefs "), 1<<20))
	w.Close()
	blob := b.Bytes()

	var cps []Checkpoint
	x, _ := NewIndexer(bytes.NewReader(blob), 1<<20, func(c Checkpoint) error {
		cps = append(cps, c)
		return nil
	})
	io.Copy(io.Discard, x)
	x.Close()

	// Read 9 bytes at offset 5,000,000 starting from the nearest checkpoint.
	const off = 5_000_000
	c := cps[0]
	for _, cc := range cps {
		if cc.Out <= off {
			c = cc
		}
	}
	r, _ := NewReader(bytes.NewReader(blob), int64(len(blob)), c)
	defer r.Close()
	io.CopyN(io.Discard, r, off-c.Out)
	buf := make([]byte, 9)
	io.ReadFull(r, buf)
	fmt.Printf("%q\n", buf)
	// Output: "explodefs"
}
