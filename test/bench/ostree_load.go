package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Cold 4 KiB random reads of the lazy path, idle and while a
// materialization runs.
//
// The reads must reach the daemon's lazy reader: once an image is
// committed, opens of its files pass through to OSTree objects, and that
// is not the path whose starvation matters. So the image read from (the
// bench image, R) must not be committed when its file is opened. The
// materializer commits one image at a time in publication order, so a
// daemon that publishes another bench-sized image (M) first and R next is
// busy materializing M while R waits in the queue and is read lazily; a
// file opened lazily stays lazy even if R's turn comes. The idle baseline
// is a daemon with --materialize=false showing R alone. Apart from that,
// both daemons run alike: fresh state, R just indexed, --span-cache-mib=1
// as in the cold random read figure (so nearly every read inflates a
// span), and a status poller every pollEvery on both, which records
// whether a materialization was running, for the overlap reported.

// pollEvery is how often the status is read during a sample window.
const pollEvery = 25 * time.Millisecond

// window is one sample of cold random reads.
type window struct {
	p50, p99 time.Duration
	took     time.Duration
	// running is the share of status polls during the window that saw a
	// materialization running.
	running float64
	// committed is how many bytes the materializer wrote during the window
	// (from the progress of M the polls saw).
	committed int64
}

// loadRounds is how many windows each side samples, alternating; the one
// with the lower p99 is kept, since the machine is noisy.
const loadRounds = 2

func loadFigures(c config, bin, work string, imgs ostreeImages, f *ostreeFigures) error {
	for round := range loadRounds {
		idle, err := sampleWindow(c, bin, filepath.Join(work, fmt.Sprint("idle-", round)), imgs, false)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		logf("idle cold random reads: p50 %v, p99 %v", idle.p50.Round(10e3), idle.p99.Round(10e3))
		loaded, err := sampleWindow(c, bin, filepath.Join(work, fmt.Sprint("loaded-", round)), imgs, true)
		if err != nil {
			return fmt.Errorf("during materialization: %w", err)
		}
		logf("cold random reads during materialization: p50 %v, p99 %v; a materialization ran during %.0f%% of the %.1fs window and wrote %.0f MB",
			loaded.p50.Round(10e3), loaded.p99.Round(10e3), 100*loaded.running, loaded.took.Seconds(), float64(loaded.committed)/1e6)
		if round == 0 || idle.p99 < f.idle.p99 {
			f.idle = idle
		}
		if round == 0 || loaded.p99 < f.loaded.p99 {
			f.loaded = loaded
		}
	}
	return nil
}

// sampleWindow starts a daemon on fresh state, publishes the bench image
// (after the load image, when load) and samples cold random reads of its
// largest file.
func sampleWindow(c config, bin, dir string, imgs ostreeImages, load bool) (window, error) {
	var w window
	src, state, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "state"), filepath.Join(dir, "mnt")
	out, err := logTo(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return w, err
	}
	defer out.Close()
	if err := os.MkdirAll(filepath.Join(src, "bench"), 0o755); err != nil {
		return w, err
	}
	extra := []string{"--span-cache-mib=1", "--log-level", "info"}
	if !load {
		extra = append(extra, lazyOnly)
	}
	d, err := startDaemonTo(out, bin, c.listen, src, state, mnt, extra...)
	if err != nil {
		return w, err
	}
	defer d.stop()
	if load {
		if err := publish(imgs.load, src, "load"); err != nil {
			return w, err
		}
		if _, err := d.waitMaterialization("bench/load:latest", "running", materializeTimeout); err != nil {
			return w, err
		}
	}
	if err := publish(imgs.first, src, "app"); err != nil {
		return w, err
	}
	target := filepath.Join(mnt, "bench", "app", "latest", imgs.bench.LargestFile)
	if err := waitReadable(target, materializeTimeout); err != nil {
		return w, err
	}
	// randomReads opens the file right after this check.
	rep, err := d.report()
	if err != nil {
		return w, fmt.Errorf("reading the status: %w", err)
	}
	if img, ok := imageByRef(rep, "bench/app:latest"); ok && img.Materialized != nil && img.Materialized.State == "done" {
		return w, fmt.Errorf("the image read from was committed before the reads began; its reads would pass through")
	}

	p := startPoller(d)
	start := time.Now()
	w.p50, w.p99, err = randomReads(target, imgs.bench.LargestFileSize, c.randomReads)
	w.took = time.Since(start)
	samples := p.stop()
	if err != nil {
		return w, err
	}
	w.running, w.committed = summarize(samples)
	return w, d.stop()
}

// sample is what one status poll saw.
type sample struct {
	running bool  // some image's materialization was running
	loadAt  int64 // bytes the load image's materialization had written
	err     error
}

type poller struct {
	d       *daemon
	quit    chan struct{}
	wg      sync.WaitGroup
	samples []sample
}

func startPoller(d *daemon) *poller {
	p := &poller{d: d, quit: make(chan struct{})}
	p.wg.Go(func() {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			p.samples = append(p.samples, p.poll())
			select {
			case <-p.quit:
				return
			case <-t.C:
			}
		}
	})
	return p
}

func (p *poller) poll() sample {
	rep, err := p.d.report()
	if err != nil {
		return sample{err: err}
	}
	var s sample
	for _, img := range rep.Images {
		m := img.Materialized
		if m == nil || m.State != "running" {
			continue
		}
		s.running = true
		if slices.Contains(img.Refs, "bench/load:latest") {
			s.loadAt = m.BytesDone
		}
	}
	return s
}

// stop ends the polling, takes a last sample and returns them all.
func (p *poller) stop() []sample {
	close(p.quit)
	p.wg.Wait()
	return append(p.samples, p.poll())
}

// summarize returns the share of polls that saw a materialization running
// (a failed poll counts as not running) and how far the load image's
// progressed between the first and the last poll that saw it running.
func summarize(samples []sample) (float64, int64) {
	var running int
	var first, last int64 = -1, 0
	for _, s := range samples {
		if !s.running {
			continue
		}
		running++
		if s.loadAt > 0 {
			if first < 0 {
				first = s.loadAt
			}
			last = s.loadAt
		}
	}
	if first < 0 {
		return float64(running) / float64(len(samples)), 0
	}
	return float64(running) / float64(len(samples)), last - first
}
