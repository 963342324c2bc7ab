package metrics_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/explodefs/explodefs/explode/metrics"
)

// gather collects c and returns every sample as "name{label=value,...}":
// a counter's or gauge's value, a histogram's count and sum (the latter
// as name_sum).
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName() + labels(m)
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
				out[f.GetName()+"_sum"+labels(m)] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}

func labels(m *dto.Metric) string {
	var kv []string
	for _, l := range m.GetLabel() {
		kv = append(kv, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(kv)
	if len(kv) == 0 {
		return ""
	}
	return "{" + strings.Join(kv, ",") + "}"
}

func wantSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// Each observer method moves its own metric, with the labels it was given.
func TestMetricsObservers(t *testing.T) {
	m := metrics.New()
	before := gather(t, m)
	// Both commit results are there from the start, at zero.
	wantSamples(t, before, map[string]float64{
		"explodefs_fuse_read_duration_seconds":                   0,
		`explodefs_materialize_duration_seconds{result=success}`: 0,
		`explodefs_materialize_duration_seconds{result=failure}`: 0,
	})

	m.ObserveRead(2 * time.Millisecond)
	m.ObserveRead(3 * time.Millisecond)
	m.ObserveCommit(1500*time.Millisecond, nil)
	m.ObserveCommit(250*time.Millisecond, errors.New("the blob went away"))
	m.RegistryError("blob_read", "5xx")
	m.RegistryError("blob_read", "5xx")
	m.RegistryError("handshake", "4xx")
	m.WatchRestarted("list")
	m.WatchRestarted("watch")
	m.WatchRestarted("watch")

	got := gather(t, m)
	wantSamples(t, got, map[string]float64{
		"explodefs_fuse_read_duration_seconds":                       2,
		`explodefs_materialize_duration_seconds{result=success}`:     1,
		`explodefs_materialize_duration_seconds_sum{result=success}`: 1.5,
		`explodefs_materialize_duration_seconds{result=failure}`:     1,
		`explodefs_materialize_duration_seconds_sum{result=failure}`: 0.25,
		`explodefs_registry_errors_total{class=5xx,op=blob_read}`:    2,
		`explodefs_registry_errors_total{class=4xx,op=handshake}`:    1,
		`explodefs_watch_restarts_total{kind=list}`:                  1,
		`explodefs_watch_restarts_total{kind=watch}`:                 2,
	})
	if sum := got["explodefs_fuse_read_duration_seconds_sum"]; sum < 0.0049 || sum > 0.0051 {
		t.Errorf("read durations sum to %vs, want 0.005", sum)
	}
}

// The read latency buckets reach from tens of microseconds to seconds.
func TestReadBuckets(t *testing.T) {
	m := metrics.New()
	m.ObserveRead(30 * time.Microsecond)
	m.ObserveRead(4 * time.Second)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "explodefs_fuse_read_duration_seconds" {
			continue
		}
		buckets := f.GetMetric()[0].GetHistogram().GetBucket()
		first, last := buckets[0], buckets[len(buckets)-1]
		if first.GetUpperBound() > 60e-6 || first.GetCumulativeCount() != 1 {
			t.Errorf("first bucket: le=%v holds %d reads, want a bound of about 50µs holding the 30µs read",
				first.GetUpperBound(), first.GetCumulativeCount())
		}
		if last.GetUpperBound() < 4 || last.GetCumulativeCount() != 2 {
			t.Errorf("last bucket: le=%v holds %d reads, want a bound of seconds holding both", last.GetUpperBound(), last.GetCumulativeCount())
		}
		return
	}
	t.Fatal("no read duration histogram")
}

func TestQueueLength(t *testing.T) {
	n := 3
	g := metrics.QueueLength(func() int { return n })
	wantSamples(t, gather(t, g), map[string]float64{"explodefs_materialize_queue_length": 3})
	n = 0
	wantSamples(t, gather(t, g), map[string]float64{"explodefs_materialize_queue_length": 0})
}

func writeFile(t *testing.T, p string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Disk use counts allocated blocks (a sparse file costs little), a hard-
// linked file once, and a missing directory as 0; a new walk happens only
// once the last one is older than the interval.
func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	index, repo := filepath.Join(dir, "index"), filepath.Join(dir, "repo")
	writeFile(t, filepath.Join(index, "000001.sst"), 4<<20)
	sparse, err := os.Create(filepath.Join(index, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sparse.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	sparse.Close()
	writeFile(t, filepath.Join(repo, "objects", "ab", "cdef.file"), 1<<20)
	if err := os.Link(filepath.Join(repo, "objects", "ab", "cdef.file"), filepath.Join(repo, "objects", "ab", "link.file")); err != nil {
		t.Fatal(err)
	}
	const interval = 300 * time.Millisecond
	d := metrics.NewDiskUsage(interval,
		metrics.DiskPart{Name: "index", Dir: index},
		metrics.DiskPart{Name: "cache", Dir: filepath.Join(dir, "no-zstd-layer-yet")},
		metrics.DiskPart{Name: "ostree", Dir: repo})

	got := gather(t, d)
	between := func(key string, lo, hi float64) {
		t.Helper()
		if v, ok := got[key]; !ok || v < lo || v > hi {
			t.Errorf("%s = %v (present %v), want %v to %v", key, v, ok, lo, hi)
		}
	}
	between(`explodefs_disk_bytes{part=index}`, 4<<20, 5<<20) // the 1 GiB sparse file holds no blocks
	between(`explodefs_disk_bytes{part=ostree}`, 1<<20, 1<<20+64<<10)
	between(`explodefs_disk_bytes{part=cache}`, 0, 0)

	// Within the interval a scrape reports the last walk.
	writeFile(t, filepath.Join(repo, "objects", "cd", "more.file"), 2<<20)
	got = gather(t, d)
	between(`explodefs_disk_bytes{part=ostree}`, 1<<20, 1<<20+64<<10)

	// After it, a scrape starts a walk, and a later one sees its result.
	time.Sleep(interval)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = gather(t, d)
		if got[`explodefs_disk_bytes{part=ostree}`] >= 3<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ostree part still %v bytes after a file of 2 MiB was added", got[`explodefs_disk_bytes{part=ostree}`])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func Example() {
	m := metrics.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, metrics.QueueLength(func() int { return 0 }))
	m.ObserveRead(time.Millisecond)
	families, _ := reg.Gather()
	for _, f := range families {
		fmt.Println(f.GetName(), f.GetType())
	}
	// Output:
	// explodefs_fuse_read_duration_seconds HISTOGRAM
	// explodefs_materialize_duration_seconds HISTOGRAM
	// explodefs_materialize_queue_length GAUGE
}
