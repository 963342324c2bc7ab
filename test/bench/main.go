// Command bench measures explodefs against baselines taken in the same run
// on the same machine, because absolute times on a shared machine are
// noise. It generates a multi-layer gzip image (test/imagegen BenchImage),
// runs the real daemon binary with a real FUSE mount, and prints:
//
//   - time-to-view (layout appears → tag readable) / serial `gzip -dc` of the layers
//   - cold 4 KiB random reads in a large gzip'd file: p50, p99
//   - warm sequential read throughput of a large file
//   - a full read of every file in path order / serial `gzip -dc`
//   - index bytes per entry and checkpoint bytes as % of tar size
//   - the daemon's peak RSS
//   - the daemon's resident set with a 1,000,000-entry image shown: idle,
//     and after `find` and an lstat of every entry
//   - the OSTree figures (ostree.go): materialization against `ostree
//     commit`, a second image sharing the base layers, reads that pass
//     through to OSTree objects, and cold reads while a materialization runs
//
// The speed and memory figures measure the lazy path, so their daemons run
// with --materialize=false: a background commit would compete with them.
//
// -only=memory or -only=ostree runs just that part.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/explode/manifest"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
)

type config struct {
	bin         string
	dir         string
	randomReads int
	listen      string
	only        string
	pprof       bool
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin/explodefs", "explodefs binary")
	flag.StringVar(&c.dir, "dir", "/var/tmp/explodefs-bench", "work directory (the generated image is kept there between runs)")
	flag.IntVar(&c.randomReads, "random-reads", 2000, "cold random reads to sample")
	flag.StringVar(&c.listen, "listen", "127.0.0.1:19797", "daemon HTTP listener")
	flag.StringVar(&c.only, "only", "", `run one part: "memory" (the million-entry image) or "ostree" (the OSTree figures); empty runs all`)
	flag.BoolVar(&c.pprof, "pprof", false, "save the daemon's heap profiles of the memory run in the work directory")
	flag.Parse()
	log.SetFlags(0)
	if err := run(c); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

type figures struct {
	tarBytes, gzipBytes   int64
	files, entries        int64
	gunzip                time.Duration
	timeToView            time.Duration
	p50, p99              time.Duration
	warmSeqBytesPerSec    float64
	fullRead              time.Duration
	fullReadBytes         int64
	entryBytes, spanBytes int64
	windowBytes           int64
	sstBytes              int64
	peakRSS               int64
	mem                   memFigures
	ostree                ostreeFigures
}

// lazyOnly keeps a daemon from materializing images, so that its figures
// measure the lazy path alone, with no background commit competing.
const lazyOnly = "--materialize=false"

func run(c config) error {
	bin, err := filepath.Abs(c.bin)
	if err != nil {
		return err
	}
	switch c.only {
	case "":
	case "memory":
		mem, err := memoryRun(c, bin)
		if err != nil {
			return err
		}
		reportMemory(mem)
		return nil
	case "ostree":
		o, err := ostreeRun(c, bin)
		if err != nil {
			return err
		}
		reportOstree(o)
		return nil
	default:
		return fmt.Errorf("-only=%q: want memory, ostree or nothing", c.only)
	}
	var f figures
	if err := runSpeed(c, bin, &f); err != nil {
		return err
	}
	if f.mem, err = memoryRun(c, bin); err != nil {
		return err
	}
	if f.ostree, err = ostreeRun(c, bin); err != nil {
		return err
	}
	report(f)
	return nil
}

// runSpeed measures the speed figures and the index size on the bench image.
func runSpeed(c config, bin string, f *figures) error {
	layout := filepath.Join(c.dir, "generated", "app")
	bench, err := generate(layout)
	if err != nil {
		return err
	}
	layers, err := layerFiles(layout)
	if err != nil {
		return err
	}
	for _, l := range layers {
		fi, err := os.Stat(l)
		if err != nil {
			return err
		}
		f.gzipBytes += fi.Size()
	}
	log.Printf("image: %d layers, %.0f MB gzip, %d files, largest %s (%d MB)", len(layers), float64(f.gzipBytes)/1e6, bench.Files, bench.LargestFile, bench.LargestFileSize>>20)

	if f.gunzip, f.tarBytes, err = gunzipBaseline(layers); err != nil {
		return err
	}
	log.Printf("baseline: serial gzip -dc of the layers: %v for %.0f MB of tar", f.gunzip.Round(time.Millisecond), float64(f.tarBytes)/1e6)

	src := filepath.Join(c.dir, "src")
	state := filepath.Join(c.dir, "state")
	mnt := filepath.Join(c.dir, "mnt")
	for _, d := range []string{src, state} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(src, "bench"), 0o755); err != nil {
		return err
	}

	// Phase 1: a fresh daemon with the default span cache sees the layout appear.
	d, err := startDaemon(bin, c.listen, src, state, mnt, lazyOnly)
	if err != nil {
		return err
	}
	staged := filepath.Join(c.dir, "src-staging")
	_ = os.RemoveAll(staged)
	if err := exec.Command("cp", "-a", layout, staged).Run(); err != nil {
		return fmt.Errorf("staging layout: %w", err)
	}
	target := filepath.Join(mnt, "bench", "app", "latest", bench.LargestFile)
	start := time.Now()
	if err := os.Rename(staged, filepath.Join(src, "bench", "app")); err != nil {
		return err
	}
	if err := waitReadable(target, 10*time.Minute); err != nil {
		d.stop()
		return err
	}
	f.timeToView = time.Since(start)
	log.Printf("time-to-view: %v", f.timeToView.Round(time.Millisecond))

	root := filepath.Join(mnt, "bench", "app", "latest") + "/"
	if f.fullRead, f.fullReadBytes, f.files, err = readAll(root); err != nil {
		d.stop()
		return err
	}
	log.Printf("full read in path order: %v, %d files, %.0f MB", f.fullRead.Round(time.Millisecond), f.files, float64(f.fullReadBytes)/1e6)
	if f.warmSeqBytesPerSec, err = warmSequential(target); err != nil {
		d.stop()
		return err
	}
	f.entries = d.entries()
	f.peakRSS = d.peakRSS()
	if err := d.stop(); err != nil {
		return err
	}

	// Phase 2: a restarted daemon (index kept, span cache of one span) for
	// cold random reads; readahead is off so each read is one 4 KiB request.
	d, err = startDaemon(bin, c.listen, src, state, mnt, lazyOnly, "--span-cache-mib=1")
	if err != nil {
		return err
	}
	if err := waitReadable(target, time.Minute); err != nil {
		d.stop()
		return err
	}
	if f.p50, f.p99, err = randomReads(target, bench.LargestFileSize, c.randomReads); err != nil {
		d.stop()
		return err
	}
	f.peakRSS = max(f.peakRSS, d.peakRSS())
	if err := d.stop(); err != nil {
		return err
	}
	return indexSizes(state, layers, f)
}

func generate(layout string) (imagegen.Bench, error) {
	bench := imagegen.BenchImage(imagegen.BenchOptions{})
	marker := filepath.Join(filepath.Dir(layout), "complete")
	if _, err := os.Stat(marker); err == nil {
		return bench, nil
	}
	log.Printf("generating the bench image in %s", layout)
	_ = os.RemoveAll(layout)
	if _, err := imagegen.WriteImage(layout, "latest", bench.Image); err != nil {
		return bench, err
	}
	return bench, os.WriteFile(marker, nil, 0o644)
}

func layerFiles(layout string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		return nil, err
	}
	var idx struct {
		Manifests []struct{ Digest digest.Digest } `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("reading %s/index.json: %v", layout, err)
	}
	src := ocilayout.New(layout)
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	img, err := manifest.Resolve(context.Background(), src, idx.Manifests[0].Digest, platform)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range img.Layers {
		p, err := src.Path(l.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// gunzipBaseline times `gzip -dc` of each layer in turn, the way a plain
// unpacker would read them, with a warm page cache like the daemon gets.
func gunzipBaseline(layers []string) (time.Duration, int64, error) {
	var total time.Duration
	var tarBytes int64
	for _, l := range layers {
		_ = exec.Command("cat", l).Run() // warm the page cache for both sides
		cmd := exec.Command("gzip", "-dc", l)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, out)
		if err != nil {
			return 0, 0, err
		}
		if err := cmd.Wait(); err != nil {
			return 0, 0, fmt.Errorf("gzip -dc %s: %w", l, err)
		}
		total += time.Since(start)
		tarBytes += n
	}
	return total, tarBytes, nil
}

func waitReadable(p string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(p); err == nil {
			f.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s not readable after %v", p, timeout)
}

func readAll(root string) (time.Duration, int64, int64, error) {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return 0, 0, 0, err
	}
	slices.Sort(paths)
	buf := make([]byte, 1<<20)
	var total int64
	start := time.Now()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, 0, err
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		f.Close()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("reading %s: %w", p, err)
		}
		total += n
	}
	return time.Since(start), total, int64(len(paths)), nil
}

func warmSequential(p string) (float64, error) {
	read := func() (int64, time.Duration, error) {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		start := time.Now()
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		return n, time.Since(start), err
	}
	if _, _, err := read(); err != nil {
		return 0, err
	}
	var best float64
	for range 3 {
		n, d, err := read()
		if err != nil {
			return 0, err
		}
		best = max(best, float64(n)/d.Seconds())
	}
	return best, nil
}

func randomReads(p string, size int64, samples int) (time.Duration, time.Duration, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM); err != nil {
		return 0, 0, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	lat := make([]time.Duration, 0, samples)
	for range samples {
		// Drop what the kernel cached of the file, so the read reaches the daemon.
		if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
			return 0, 0, err
		}
		off := r.Int64N(size-4096) &^ 4095
		start := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, 0, fmt.Errorf("reading %s at %d: %w", p, off, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

func indexSizes(state string, layers []string, f *figures) error {
	// The daemon stopped cleanly, so Badger flushed its memtables to tables.
	err := filepath.WalkDir(filepath.Join(state, "index"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".sst") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			f.sstBytes += fi.Size()
		}
		return err
	})
	if err != nil {
		return err
	}
	return layerBytes(state, layers, f)
}

type daemon struct {
	cmd    *exec.Cmd
	listen string
	// stopped holds the result of the first stop, so stopping twice (a
	// deferred stop after an explicit one) is harmless.
	stopped *error
}

func startDaemon(bin, listen, src, state, mnt string, extra ...string) (*daemon, error) {
	return startDaemonTo(os.Stderr, bin, listen, src, state, mnt, extra...)
}

// startDaemonTo starts a daemon that writes its log to out; extra flags
// come last, so they override the defaults (--log-level warn).
func startDaemonTo(out io.Writer, bin, listen, src, state, mnt string, extra ...string) (*daemon, error) {
	args := append([]string{"serve", "--source", "oci-dir:" + src, "--mountpoint", mnt,
		"--state-dir", state, "--listen", listen, "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, listen: listen}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + listen + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.stop()
	return nil, fmt.Errorf("daemon did not become ready")
}

func (d *daemon) report() (status.Report, error) {
	var rep status.Report
	resp, err := http.Get("http://" + d.listen + "/status")
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	return rep, json.NewDecoder(resp.Body).Decode(&rep)
}

func (d *daemon) entries() int64 {
	rep, err := d.report()
	if err != nil {
		return 0
	}
	var n int64
	for _, l := range rep.Layers {
		n += l.Entries
	}
	return n
}

// peakRSS reads the daemon's high-water resident set size.
func (d *daemon) peakRSS() int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

func (d *daemon) stop() error {
	if d.stopped != nil {
		return *d.stopped
	}
	err := d.signalStop()
	d.stopped = &err
	return err
}

func (d *daemon) signalStop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		return fmt.Errorf("daemon did not stop on SIGTERM")
	}
}
