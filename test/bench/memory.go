package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/explodefs/explodefs/test/imagegen"
)

// The memory image: 1,000 directories of 1,000 empty files, the image of
// issue 5 point 6 that once took the daemon to 658 MiB idle.
const (
	manyDirs        = 1000
	manyFilesPerDir = 1000
	// manyIdle is how long the daemon sits idle before its resident set is
	// read, so that what the Go runtime gives back on its own is given back.
	manyIdle = 5 * time.Second
)

// memFigures are the daemon's memory with the million-entry image shown.
type memFigures struct {
	entries      int64
	gzipBytes    int64
	timeToView   time.Duration
	idle         procMemory
	walk         time.Duration
	walked       int64
	afterWalk    procMemory
	peakResident int64
	// The same image committed to OSTree by a daemon restarted on the
	// same state with materialization on.
	committed     time.Duration
	committedIdle procMemory
}

// procMemory is what /proc/PID/status says of a process's memory.
type procMemory struct {
	rss, anon, file, hwm int64
}

func (m procMemory) String() string {
	return fmt.Sprintf("%.0f MiB (anon %.0f, file %.0f)", mib(m.rss), mib(m.anon), mib(m.file))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// memoryRun shows the million-entry image with a fresh daemon and reads
// the daemon's memory idle once it is ready, and again after a full walk
// of the tree: `find` and then an lstat of every entry, as a scanner does.
func memoryRun(c config, bin string) (memFigures, error) {
	var f memFigures
	layout := filepath.Join(c.dir, "generated-many", "many")
	if err := generateOnce(layout, imagegen.ManyFilesImage(manyDirs, manyFilesPerDir)); err != nil {
		return f, err
	}
	layers, err := layerFiles(layout)
	if err != nil {
		return f, err
	}
	for _, l := range layers {
		fi, err := os.Stat(l)
		if err != nil {
			return f, err
		}
		f.gzipBytes += fi.Size()
	}

	src := filepath.Join(c.dir, "src-many")
	state := filepath.Join(c.dir, "state-many")
	mnt := filepath.Join(c.dir, "mnt-many")
	for _, d := range []string{src, state} {
		if err := os.RemoveAll(d); err != nil {
			return f, err
		}
	}
	if err := os.MkdirAll(filepath.Join(src, "bench"), 0o755); err != nil {
		return f, err
	}
	extra := []string{lazyOnly}
	if c.pprof {
		extra = append(extra, "--pprof")
	}
	d, err := startDaemon(bin, c.listen, src, state, mnt, extra...)
	if err != nil {
		return f, err
	}
	defer d.stop()
	staged := filepath.Join(c.dir, "src-many-staging")
	_ = os.RemoveAll(staged)
	if err := exec.Command("cp", "-a", layout, staged).Run(); err != nil {
		return f, fmt.Errorf("staging layout: %w", err)
	}
	root := filepath.Join(mnt, "bench", "many", "latest")
	start := time.Now()
	if err := os.Rename(staged, filepath.Join(src, "bench", "many")); err != nil {
		return f, err
	}
	if err := waitReadable(filepath.Join(root, imagegen.ManyFilesPath(manyDirs, manyFilesPerDir)), 10*time.Minute); err != nil {
		return f, err
	}
	f.timeToView = time.Since(start)
	f.entries = d.entries()
	log.Printf("million-entry image shown after %v; idling %v", f.timeToView.Round(time.Millisecond), manyIdle)

	time.Sleep(manyIdle)
	if f.idle, err = d.memory(); err != nil {
		return f, err
	}
	log.Printf("idle: %v", f.idle)
	if c.pprof {
		d.saveHeapProfile(filepath.Join(c.dir, "heap-idle.pprof"))
	}

	start = time.Now()
	if f.walked, err = walkTree(root + "/"); err != nil {
		return f, err
	}
	f.walk = time.Since(start)
	if want := int64(manyDirs*manyFilesPerDir + manyDirs); f.walked != want {
		return f, fmt.Errorf("walk saw %d entries below the image root, want %d", f.walked, want)
	}
	if f.afterWalk, err = d.memory(); err != nil {
		return f, err
	}
	log.Printf("after find and lstat of %d entries in %v: %v", f.walked, f.walk.Round(time.Millisecond), f.afterWalk)
	if c.pprof {
		d.saveHeapProfile(filepath.Join(c.dir, "heap-walked.pprof"))
	}
	f.peakResident = f.afterWalk.hwm
	if err := d.stop(); err != nil {
		return f, err
	}
	return f, materializedMemory(c, bin, src, state, mnt, &f)
}

// materializedMemory restarts the daemon on the indexed million-entry
// image with materialization on, and reads its memory once the image is
// committed: a commit assembles the whole tree in libostree's memory, and
// what it took must be given back.
func materializedMemory(c config, bin, src, state, mnt string, f *memFigures) error {
	d, err := startDaemon(bin, c.listen, src, state, mnt)
	if err != nil {
		return err
	}
	defer d.stop()
	img, err := d.waitMaterialization("bench/many:latest", "done", 10*time.Minute)
	if err != nil {
		return err
	}
	f.committed = img.Materialized.Finished.Sub(img.Materialized.Started)
	time.Sleep(manyIdle)
	if f.committedIdle, err = d.memory(); err != nil {
		return err
	}
	log.Printf("committed to OSTree in %v; idle: %v, peak %.0f MiB", f.committed.Round(time.Millisecond), f.committedIdle, mib(f.committedIdle.hwm))
	return d.stop()
}

// walkTree runs find over root and then lstats every entry below it, as a
// scanner that looks at each file's metadata would, and returns how many
// entries it saw.
func walkTree(root string) (int64, error) {
	find := exec.Command("find", root)
	out, err := find.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := find.Start(); err != nil {
		return 0, err
	}
	listed, err := io.ReadAll(out)
	if err != nil {
		return 0, err
	}
	if err := find.Wait(); err != nil {
		return 0, fmt.Errorf("find %s: %w", root, err)
	}
	var n int64
	for _, p := range strings.Split(strings.TrimSuffix(string(listed), "\n"), "\n") {
		if p == root {
			continue
		}
		if _, err := os.Lstat(p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// generateOnce writes img as a layout at layout unless an earlier run did.
func generateOnce(layout string, img imagegen.Image) error {
	marker := filepath.Join(filepath.Dir(layout), "complete")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	log.Printf("generating %s", layout)
	_ = os.RemoveAll(layout)
	if _, err := imagegen.WriteImage(layout, "latest", img); err != nil {
		return err
	}
	return os.WriteFile(marker, nil, 0o644)
}

// memory reads the daemon's resident set: VmRSS with its anonymous and
// file-backed parts, and the high-water mark VmHWM.
func (d *daemon) memory() (procMemory, error) {
	var m procMemory
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file, "VmHWM:": &m.hwm}
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, "\t")
		if dst := fields[name]; ok && dst != nil {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			*dst = kb << 10
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("no VmRSS for the daemon in /proc")
	}
	return m, nil
}

// saveHeapProfile keeps the daemon's heap profile for `go tool pprof`.
func (d *daemon) saveHeapProfile(path string) {
	resp, err := http.Get("http://" + d.listen + "/debug/pprof/heap?gc=1")
	if err != nil {
		log.Printf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	out, err := os.Create(path)
	if err != nil {
		log.Printf("heap profile: %v", err)
		return
	}
	defer out.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		log.Printf("heap profile: %v", err)
	}
	log.Printf("heap profile in %s", path)
}
