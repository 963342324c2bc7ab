package metrics

import (
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var diskDesc = prometheus.NewDesc("explodefs_disk_bytes",
	"Disk space used by a part of the daemon's state (index: the Badger index; cache: decompressed zstd layers; ostree: the OSTree repository), measured at most every minute.",
	[]string{"part"}, nil)

// DefaultDiskInterval is how often DiskUsage walks its directories at
// most. An OSTree repository of a million objects takes seconds to walk.
const DefaultDiskInterval = time.Minute

// firstWalkWait is how long the first scrape waits for the first walk, so
// that it has numbers; later scrapes report the last walk's at once.
const firstWalkWait = 2 * time.Second

// DiskPart is one directory whose disk use is reported under Name.
type DiskPart struct {
	Name, Dir string
}

// DiskUsage reports the disk used below directories. Walking them on
// every scrape would cost a busy repository seconds of I/O each time, so
// a scrape starts a walk in the background when the last one is older
// than the interval (or than ten times its own duration, which bounds the
// walks to a tenth of the time on a slow disk), and reports the last
// result meanwhile. Nobody scraping means no walks.
type DiskUsage struct {
	parts    []DiskPart
	interval time.Duration

	mu       sync.Mutex
	bytes    map[string]int64 // by part name; nil before the first walk
	finished time.Time        // when the last walk ended
	took     time.Duration    // how long it took
	walking  chan struct{}    // closed when the walk in flight ends; nil when none runs
}

// NewDiskUsage reports the disk used by parts, walking them at most every
// interval (DefaultDiskInterval when zero).
func NewDiskUsage(interval time.Duration, parts ...DiskPart) *DiskUsage {
	if interval <= 0 {
		interval = DefaultDiskInterval
	}
	return &DiskUsage{parts: parts, interval: interval}
}

// Describe implements prometheus.Collector.
func (d *DiskUsage) Describe(ch chan<- *prometheus.Desc) { ch <- diskDesc }

// Collect implements prometheus.Collector.
func (d *DiskUsage) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	if d.walking == nil && time.Since(d.finished) >= max(d.interval, 10*d.took) {
		d.walking = make(chan struct{})
		go d.walk(d.walking)
	}
	first, walking := d.bytes == nil, d.walking
	d.mu.Unlock()
	if first && walking != nil {
		select {
		case <-walking:
		case <-time.After(firstWalkWait):
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.parts {
		if n, ok := d.bytes[p.Name]; ok {
			ch <- prometheus.MustNewConstMetric(diskDesc, prometheus.GaugeValue, float64(n), p.Name)
		}
	}
}

// walk measures every part and publishes the result; done is closed at
// the end.
func (d *DiskUsage) walk(done chan struct{}) {
	start := time.Now()
	bytes := make(map[string]int64, len(d.parts))
	for _, p := range d.parts {
		bytes[p.Name] = diskUsed(p.Dir)
	}
	d.mu.Lock()
	d.bytes, d.finished, d.took, d.walking = bytes, time.Now(), time.Since(start), nil
	d.mu.Unlock()
	close(done)
}

// diskUsed returns the bytes allocated to the files and directories below
// dir, as du -sx counts them: blocks allocated rather than sizes (Badger's
// files are sparse), hard-linked files once, and nothing on other
// filesystems (a mount inside the repository is not its disk). Entries
// that vanish during the walk (a prune, a compaction) or cannot be read
// are left out; a missing dir uses 0 bytes.
func diskUsed(dir string) int64 {
	// A repository configured as a symlink is measured where it leads.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	type inode struct{ dev, ino uint64 }
	var total int64
	var rootDev uint64
	seen := map[inode]bool{}
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone or unreadable: the walk goes on without it
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			total += info.Size()
			return nil
		}
		if p == dir {
			rootDev = uint64(st.Dev)
		} else if uint64(st.Dev) != rootDev {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !e.IsDir() && st.Nlink > 1 {
			id := inode{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}
