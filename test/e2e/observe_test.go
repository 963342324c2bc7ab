package e2e

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/metrics/metricstest"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
)

// TestObserve is what an operator sees of a daemon at work: a big image's
// indexing moving in `explodefs status` and /status, and /metrics moving
// with the layers indexed, the lazy reads (bytes inflated, span cache
// misses, read latency) and, after a restart with materialization on,
// the commit's duration and the disk the index and the repository take.
func TestObserve(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, mnt, state := filepath.Join(dir, "src"), filepath.Join(dir, "mnt"), filepath.Join(dir, "state")
	bin := buildDaemon(t, dir)
	// The bench image: 365 MB of tar in three gzip layers, which one
	// layer pass at a time indexes in seconds.
	bench := imagegen.BenchImage(imagegen.BenchOptions{Seed: 3})
	write(t, filepath.Join(src, "obs", "big"), bench.Image)
	const ref = "obs/big:latest"

	d := newDaemon(t, bin, src, mnt, state)
	// Without materialization every read of the image is lazy and only the
	// test's reads inflate anything; the restart below turns it on.
	d.args = append(d.args, "--materialize=false", "--layer-passes", "1")
	d.start()

	img, layersMidway := watchIndexing(t, d, bin, ref)
	indexed := metricstest.Scrape(t, "http://"+d.listen+"/metrics")
	if got := indexed[`explodefs_layers{state=ready}`]; got != float64(len(img.Layers)) || got <= layersMidway {
		t.Errorf("explodefs_layers{state=ready} = %v once the image is ready, %v while it indexed; want %d, and fewer before",
			got, layersMidway, len(img.Layers))
	}

	readSome(t, filepath.Join(mnt, "obs", "big", "latest"), bench)
	read := metricstest.Scrape(t, "http://"+d.listen+"/metrics")
	for _, name := range []string{
		"explodefs_bytes_inflated_total",
		`explodefs_span_cache_requests_total{result=miss}`,
		"explodefs_fuse_read_duration_seconds_count",
	} {
		if read[name] <= indexed[name] {
			t.Errorf("%s: %v before reading files, %v after; want it to grow", name, indexed[name], read[name])
		}
	}
	// Every READ the daemon answered is timed once.
	timed := read["explodefs_fuse_read_duration_seconds_count"] - indexed["explodefs_fuse_read_duration_seconds_count"]
	answered := read["explodefs_fuse_image_reads_total"] - indexed["explodefs_fuse_image_reads_total"]
	if timed != answered {
		t.Errorf("%v READs timed, %v answered", timed, answered)
	}
	t.Logf("reads: %v READs, %.1f MB inflated, %v span misses, %.2f ms per READ on average", answered,
		(read["explodefs_bytes_inflated_total"]-indexed["explodefs_bytes_inflated_total"])/1e6,
		read[`explodefs_span_cache_requests_total{result=miss}`]-indexed[`explodefs_span_cache_requests_total{result=miss}`],
		1000*(read["explodefs_fuse_read_duration_seconds_sum"]-indexed["explodefs_fuse_read_duration_seconds_sum"])/timed)

	// Again with materialization: the restarted daemon commits the image.
	d.stop(syscall.SIGTERM)
	d.args = slices.DeleteFunc(d.args, func(a string) bool { return a == "--materialize=false" })
	d.start()
	waitCommitted(t, d, ref, 10*time.Minute)
	committed := metricstest.Scrape(t, "http://"+d.listen+"/metrics")
	for name, want := range map[string]float64{
		`explodefs_materialize_duration_seconds_count{result=success}`: 1,
		`explodefs_materialize_duration_seconds_count{result=failure}`: 0,
		"explodefs_materialize_queue_length":                           0,
	} {
		if got, ok := committed[name]; !ok || got != want {
			t.Errorf("after the commit: %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if committed["explodefs_bytes_inflated_total"] <= 0 {
		t.Error("the commit read the layers without inflating anything")
	}
	// The first scrape of this daemon walked the state after the commit:
	// the repository holds the files' bytes (bare mode, uncompressed).
	if got := committed[`explodefs_disk_bytes{part=index}`]; got <= 0 {
		t.Errorf("explodefs_disk_bytes{part=index} = %v", got)
	}
	if got := committed[`explodefs_disk_bytes{part=ostree}`]; got < float64(bench.ContentBytes)/2 {
		t.Errorf("explodefs_disk_bytes{part=ostree} = %v after committing %d bytes of files", got, bench.ContentBytes)
	}
	if _, ok := committed[`explodefs_disk_bytes{part=cache}`]; !ok {
		t.Error("explodefs_disk_bytes{part=cache} is missing")
	}
	t.Logf("commit took %.1f s; disk: index %.1f MB, ostree %.1f MB, cache %.1f MB",
		committed[`explodefs_materialize_duration_seconds_sum{result=success}`],
		committed[`explodefs_disk_bytes{part=index}`]/1e6, committed[`explodefs_disk_bytes{part=ostree}`]/1e6,
		committed[`explodefs_disk_bytes{part=cache}`]/1e6)
}

// cliProgress finds the INDEXED percentage of ref's row in `explodefs
// status` while it indexes: "[###       ] 34%".
var cliProgress = regexp.MustCompile(`\[[# ]{10}\] (\d+)%`)

// watchIndexing polls `explodefs status` and /status until ref's image is
// ready, and fails unless both showed its indexing at two or more values
// short of done. It returns the image's status and how many layers
// /metrics counted indexed while it was still indexing.
func watchIndexing(t *testing.T, d *daemon, bin, ref string) (status.Image, float64) {
	t.Helper()
	jsonSeen, cliSeen := map[int64]bool{}, map[int]bool{}
	layersMidway := -1.0
	deadline := time.Now().Add(5 * time.Minute)
	for {
		img, ok := d.image(ref)
		switch {
		case ok && img.State == status.Ready:
			var js []int64
			for v := range jsonSeen {
				js = append(js, v)
			}
			slices.Sort(js)
			t.Logf("indexing seen at %d points in /status (bytes %v) and %d in explodefs status (%v%%)", len(js), js, len(cliSeen), cliSeen)
			if len(jsonSeen) < 2 || len(cliSeen) < 2 {
				t.Fatalf("indexing progress seen at %d values in /status and %d in explodefs status, want 2 or more each", len(jsonSeen), len(cliSeen))
			}
			return img, layersMidway
		case ok && img.State == status.Failed:
			t.Fatalf("%s failed: %s", ref, img.Reason)
		case ok && img.State == status.Indexing && img.BytesTotal > 0 && img.BytesDone > 0 && img.BytesDone < img.BytesTotal:
			jsonSeen[img.BytesDone] = true
			if layersMidway < 0 {
				layersMidway = metricstest.Scrape(t, "http://"+d.listen+"/metrics")[`explodefs_layers{state=ready}`]
				if layersMidway >= float64(len(img.Layers)) {
					t.Errorf("explodefs_layers{state=ready} = %v while %d of %d bytes are indexed", layersMidway, img.BytesDone, img.BytesTotal)
				}
			}
		}
		if pct, ok := statusCLIProgress(t, bin, d.listen, ref); ok && pct < 100 {
			cliSeen[pct] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 5 minutes", ref)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statusCLIProgress runs `explodefs status` and returns ref's indexing
// percentage, if its row shows one.
func statusCLIProgress(t *testing.T, bin, listen, ref string) (int, bool) {
	t.Helper()
	out, err := exec.Command(bin, "status", "--listen", listen).CombinedOutput()
	if err != nil {
		t.Fatalf("explodefs status: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, ref+" ") {
			continue
		}
		m := cliProgress.FindStringSubmatch(line)
		if m == nil {
			return 0, false
		}
		pct, err := strconv.Atoi(m[1])
		return pct, err == nil
	}
	return 0, false
}

// readSome reads, through the mount, 40 small files whole and 20 pieces
// of the image's largest file at random places, checking their sizes.
func readSome(t *testing.T, root string, bench imagegen.Bench) {
	t.Helper()
	var small []string
	err := filepath.WalkDir(root+"/", func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && len(small) < 40 {
			small = append(small, p)
		}
		return nil
	})
	if err != nil || len(small) == 0 {
		t.Fatalf("walking the image found %d files: %v", len(small), err)
	}
	for _, p := range small {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err := os.ReadFile(p); err != nil || int64(len(raw)) != fi.Size() {
			t.Fatalf("reading %s: %d of %d bytes, %v", p, len(raw), fi.Size(), err)
		}
	}
	f, err := os.Open(filepath.Join(root, bench.LargestFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(3, 3))
	buf := make([]byte, 64<<10)
	for range 20 {
		off := r.Int64N(bench.LargestFileSize - int64(len(buf)))
		if n, err := f.ReadAt(buf, off); err != nil || n != len(buf) {
			t.Fatalf("reading %s at %d: %d bytes, %v", bench.LargestFile, off, n, err)
		}
	}
}

// waitCommitted waits until ref's image has its OSTree commit.
func waitCommitted(t *testing.T, d *daemon, ref string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		img, ok := d.image(ref)
		if ok && img.Materialized != nil {
			switch img.Materialized.State {
			case "done":
				return
			case "failed":
				t.Fatalf("materializing %s failed: %s", ref, img.Materialized.Reason)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not committed after %v: %+v", ref, timeout, img.Materialized)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
