package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// seqRounds is how many cold reads each side of the sequential figure
// takes; the best of each is compared, since the machine is noisy. A
// read of the 42 MB file takes about 20 ms, so one slow disk request
// moves a round by several per cent: three rounds left the figure
// between 0.76 and 1.13 with the same code.
const seqRounds = 7

// The daemon's log lines that say whether image files pass through.
const (
	passthroughOn  = "image files: passthrough to materialized objects"
	passthroughOff = "image files: lazy reads only"
)

// seqFigures reads file p of the committed bench image from start to end
// through the mount and straight from its OSTree object, alternating, and
// keeps each side's best throughput. The page cache is dropped before
// every read, so both sides read from the disk.
func seqFigures(d *daemon, mnt, repo, p, logPath string, f *ostreeFigures) error {
	viaMount := filepath.Join(mnt, "bench", "app", "latest", p)
	object, err := objectPath(repo, tagRef("app"), "/"+p)
	if err != nil {
		return err
	}
	// The first open of a committed file verifies its object, reading it
	// whole; that is a one-time cost, kept out of the timed reads.
	if _, _, err := readWhole(viaMount); err != nil {
		return err
	}
	var cpu time.Duration
	for range seqRounds {
		if err := dropCaches(); err != nil {
			return err
		}
		before, err := d.cpuTime()
		if err != nil {
			return err
		}
		n, took, err := readWhole(viaMount)
		if err != nil {
			return err
		}
		after, err := d.cpuTime()
		if err != nil {
			return err
		}
		cpu += after - before
		f.seqMount = max(f.seqMount, float64(n)/took.Seconds())

		if err := dropCaches(); err != nil {
			return err
		}
		m, took, err := readWhole(object)
		if err != nil {
			return err
		}
		if m != n {
			return fmt.Errorf("%s holds %d bytes, %s %d", object, m, viaMount, n)
		}
		f.seqObject = max(f.seqObject, float64(m)/took.Seconds())
		f.seqBytes = n
	}
	f.mountReadCPU = cpu / seqRounds
	f.passthrough, err = passthroughState(logPath)
	logf("cold sequential read of %s: mount %.0f MB/s, object %.0f MB/s, passthrough %s",
		p, f.seqMount/1e6, f.seqObject/1e6, f.passthrough)
	return err
}

// readWhole opens p and reads it to the end; the time includes the open.
func readWhole(p string) (int64, time.Duration, error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	file, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer file.Close()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{file}, buf)
	if err != nil {
		return n, 0, fmt.Errorf("reading %s: %w", p, err)
	}
	return n, time.Since(start), nil
}

// passthroughState reads from the daemon's log whether its mount passes
// reads of committed images through: "yes", or the daemon's reason why not.
func passthroughState(logPath string) (string, error) {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, passthroughOn) {
			return "yes", nil
		}
		if _, reason, ok := strings.Cut(line, passthroughOff); ok {
			return "no" + strings.TrimSuffix(strings.TrimSpace(reason), `"`), nil
		}
	}
	return "unknown (the daemon did not say)", nil
}
