package main

// The OSTree figures: the daemon materializes every published image into
// an OSTree repository in the background and, once an image is committed,
// passes reads of its files through to the OSTree objects. Each figure is
// a ratio to a baseline taken in the same run:
//
//   - materializing the bench image / `ostree commit --tree=dir=` of the
//     same image already extracted (ostree_commit.go)
//   - materializing a second image that shares the bench image's base
//     layers / materializing the first (ostree_commit.go)
//   - a cold sequential read through the mount / of the OSTree object
//     (ostree_read.go)
//   - cold 4 KiB random-read p99 of the lazy path while a materialization
//     runs / idle (ostree_load.go)

import (
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
)

// ostreeFigures are what the OSTree part measures.
type ostreeFigures struct {
	// The bench image: publication to committed, against the CLI.
	materialize, cliCommit time.Duration
	sameTree               bool   // both commits have the same root tree
	repoMode               string // of the daemon's repository
	// The second image, sharing the base layers.
	second               time.Duration
	newBytes, firstBytes int64 // file bytes of its new layer and of the bench image
	// oneFile is the commit of the base layers and one small file: the
	// cost of a commit that owes nothing to new bytes.
	oneFile time.Duration
	// Cold sequential reads of the largest file.
	seqMount, seqObject float64 // bytes per second, best of seqRounds
	seqBytes            int64
	mountReadCPU        time.Duration // daemon CPU per read through the mount
	passthrough         string        // "yes", or why not
	// Cold random reads of the lazy path.
	idle, loaded window
}

// ostreeRun measures the OSTree figures. Each daemon gets fresh state under
// <dir>/ostree; generated layouts are kept between runs like the others.
func ostreeRun(c config, bin string) (ostreeFigures, error) {
	var f ostreeFigures
	work := filepath.Join(c.dir, "ostree")
	if err := os.RemoveAll(work); err != nil {
		return f, err
	}
	imgs, err := ostreeImageSet(c.dir)
	if err != nil {
		return f, fmt.Errorf("ostree images: %w", err)
	}
	f.newBytes, f.firstBytes = imgs.newBytes, imgs.bench.ContentBytes
	if err := commitFigures(c, bin, work, imgs, &f); err != nil {
		return f, fmt.Errorf("materialization figures: %w", err)
	}
	if err := loadFigures(c, bin, work, imgs, &f); err != nil {
		return f, fmt.Errorf("random reads during materialization: %w", err)
	}
	return f, nil
}

// ostreeImages are the layouts the OSTree figures publish.
type ostreeImages struct {
	bench imagegen.Bench
	// first is the bench image; second has its first two layers (the OS
	// base and the language runtime) and a new application layer; oneFile
	// has the same two and a layer of one small file, the least a commit
	// of that base costs; load is another bench-sized image with no layer
	// in common with first.
	first, second, oneFile, load string
	newBytes                     int64 // file bytes of second's new layer
}

// loadSeed makes the load image's content differ from the bench image's.
const loadSeed = 1

func ostreeImageSet(dir string) (ostreeImages, error) {
	var s ostreeImages
	var err error
	s.first = filepath.Join(dir, "generated", "app")
	if s.bench, err = generate(s.first); err != nil {
		return s, err
	}
	app, newBytes := newAppLayer()
	layers := append(slices.Clone(s.bench.Image.Manifests[0].Layers[:2]), app)
	s.newBytes = newBytes
	s.second = filepath.Join(dir, "generated-ostree-app2", "app2")
	if err := generateOnce(s.second, imagegen.SingleImage(layers...)); err != nil {
		return s, err
	}
	s.oneFile = filepath.Join(dir, "generated-ostree-onefile", "onefile")
	oneFile := imagegen.Layer{Compression: imagegen.Gzip, CreatedBy: "one file",
		Entries: imagegen.Entries(imagegen.File("etc/app-version", 0o644, imagegen.String("2\n")))}
	if err := generateOnce(s.oneFile, imagegen.SingleImage(append(slices.Clone(s.bench.Image.Manifests[0].Layers[:2]), oneFile)...)); err != nil {
		return s, err
	}
	s.load = filepath.Join(dir, "generated-ostree-load", "load")
	if err := generateOnce(s.load, imagegen.BenchImage(imagegen.BenchOptions{Seed: loadSeed}).Image); err != nil {
		return s, err
	}
	return s, checkSharing(s)
}

// checkSharing fails unless the second image really shares the bench
// image's base layers (same digests, so the daemon sees one layer) and the
// load image shares none: the figures mean nothing otherwise.
func checkSharing(s ostreeImages) error {
	first, err := layerFiles(s.first)
	if err != nil {
		return err
	}
	second, err := layerFiles(s.second)
	if err != nil {
		return err
	}
	oneFile, err := layerFiles(s.oneFile)
	if err != nil {
		return err
	}
	load, err := layerFiles(s.load)
	if err != nil {
		return err
	}
	if len(first) != 3 || len(second) != 3 {
		return fmt.Errorf("want 3 layers in %s and %s, have %d and %d", s.first, s.second, len(first), len(second))
	}
	if len(oneFile) != 3 {
		return fmt.Errorf("want 3 layers in %s, have %d", s.oneFile, len(oneFile))
	}
	for i := range 2 {
		if filepath.Base(first[i]) != filepath.Base(oneFile[i]) {
			return fmt.Errorf("layer %d of %s is not the bench image's", i, s.oneFile)
		}
		if filepath.Base(first[i]) != filepath.Base(second[i]) {
			return fmt.Errorf("layer %d of %s is %s, of %s %s: the second image does not share the base layers",
				i, s.first, filepath.Base(first[i]), s.second, filepath.Base(second[i]))
		}
	}
	if filepath.Base(first[2]) == filepath.Base(second[2]) {
		return fmt.Errorf("the second image's application layer is the bench image's")
	}
	for _, l := range load {
		for _, b := range first {
			if filepath.Base(l) == filepath.Base(b) {
				return fmt.Errorf("the load image shares layer %s with the bench image", filepath.Base(l))
			}
		}
	}
	return nil
}

// newAppLayer is the second image's application layer: a rebuilt app of
// a few hundred sources and one binary, about 4% of the bench image's file
// bytes. It returns the layer and its file bytes. Seeds are far from those
// of BenchImage, so no file's content (and OSTree object) is shared.
func newAppLayer() (imagegen.Layer, int64) {
	const seedBase = 1 << 40
	rng := rand.New(rand.NewPCG(seedBase, 2))
	var entries []imagegen.Entry
	var total int64
	dirs := map[string]bool{}
	add := func(name string, mode int64, content imagegen.Content) {
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			entries = append(entries, imagegen.Dir(d, 0o755))
		}
		entries = append(entries, imagegen.File(name, mode, content))
		total += content.Size()
	}
	for i := range 300 {
		size := 1<<10 + rng.Int64N(40<<10)
		add(fmt.Sprintf("opt/app/src/pkg%02d/file%03d.go", i%20, i), 0o644, imagegen.Text(seedBase+uint64(i), size))
	}
	add("opt/app/bin/app", 0o755, imagegen.Binary(seedBase+1000, 8<<20, 35))
	// Parents before children, as tar producers emit them.
	slices.SortStableFunc(entries, func(a, b imagegen.Entry) int { return strings.Compare(a.Header.Name, b.Header.Name) })
	mtime := imagegen.BaseTime().Add(30 * 24 * time.Hour)
	for j := range entries {
		entries[j].Header.ModTime = mtime.Add(time.Duration(j) * time.Second)
	}
	return imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(entries...), CreatedBy: "application, rebuilt"}, total
}

// publish shows layout to a daemon as <src>/bench/<stream>: copied beside
// src first (outside what the daemon watches) and renamed in, so the
// daemon never sees a half-copied layout.
// Dirty pages are written back before, so that the writeback of the copy
// does not land in what is timed next.
func publish(layout, src, stream string) error {
	staged := src + "-staging-" + stream
	_ = os.RemoveAll(staged)
	if out, err := exec.Command("cp", "-a", layout, staged).CombinedOutput(); err != nil {
		return fmt.Errorf("staging %s: %w: %s", layout, err, out)
	}
	unix.Sync()
	if err := os.MkdirAll(filepath.Join(src, "bench"), 0o755); err != nil {
		return err
	}
	return os.Rename(staged, filepath.Join(src, "bench", stream))
}

// dropCaches writes back and drops the page cache, so the next read comes
// from the disk.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("dropping the page cache: %w", err)
	}
	return nil
}

// imageByRef finds the image the status names by ref ("bench/app:latest").
func imageByRef(rep status.Report, ref string) (status.Image, bool) {
	for _, img := range rep.Images {
		if slices.Contains(img.Refs, ref) {
			return img, true
		}
	}
	return status.Image{}, false
}

// waitMaterialization polls the status until the image named ref has the
// materialization state want ("running" or "done").
// statusPoll is how often waitMaterialization reads the daemon's status.
const statusPoll = 100 * time.Millisecond

func (d *daemon) waitMaterialization(ref, want string, timeout time.Duration) (status.Image, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		rep, err := d.report()
		if err != nil {
			return status.Image{}, fmt.Errorf("reading the status: %w", err)
		}
		if img, ok := imageByRef(rep, ref); ok && img.Materialized != nil {
			switch m := img.Materialized; {
			case m.State == want:
				return img, nil
			case m.State == "failed":
				return img, fmt.Errorf("materializing %s failed: %s", ref, m.Reason)
			case want == "running" && m.State == "done":
				return img, fmt.Errorf("%s was materialized before it was seen running", ref)
			}
		}
		// The times compared come from the daemon's status, not from
		// this loop, so polling often buys nothing; and each /status
		// costs the daemon about 1.5 ms of CPU, which at 100 polls a
		// second took a sixth of a core from the commit it measured.
		time.Sleep(statusPoll)
	}
	return status.Image{}, fmt.Errorf("materialization of %s not %s after %v", ref, want, timeout)
}

// materializeTime is the time from the image's publication (its Finished
// in the status) until its commit was done (Materialized.Finished), both
// taken by the daemon. Materialized.Started would leave out the wait in
// the queue, but the done state does not keep it; with an empty queue the
// commit starts within milliseconds of publication anyway.
func materializeTime(img status.Image) (time.Duration, error) {
	m := img.Materialized
	if m == nil || img.Finished.IsZero() || m.Finished.IsZero() || m.Finished.Before(img.Finished) {
		return 0, fmt.Errorf("image %s: no publication and materialization times in the status", img.Digest)
	}
	return m.Finished.Sub(img.Finished), nil
}

// cpuTime is the CPU time the daemon has used so far, from /proc (clock
// ticks of 10 ms).
func (d *daemon) cpuTime() (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14 and stime 15.
	_, rest, _ := strings.Cut(string(raw), ") ")
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", d.cmd.Process.Pid)
	}
	var utime, stime int64
	if _, err := fmt.Sscan(fields[11]+" "+fields[12], &utime, &stime); err != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %w", d.cmd.Process.Pid, err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// logTo creates a daemon's log file.
func logTo(p string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return os.Create(p)
}

func logf(format string, args ...any) { log.Printf("ostree: "+format, args...) }
