package httpapi_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/httpapi"
	"github.com/explodefs/explodefs/explode/metrics"
	"github.com/explodefs/explodefs/explode/metrics/metricstest"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := status.NewRegistry()
	layer := digest.FromString("layer")
	img := digest.FromString("image")
	progress := reg.StartLayer(layer, 1000)
	progress.Store(250)
	reg.UpdateImage(img, func(s *status.Image) {
		s.State, s.Layers, s.BytesTotal, s.Refs = status.Indexing, []digest.Digest{layer}, 1000, []string{"ns/app:latest"}
	})
	var ready, wedged atomic.Bool
	srv := httptest.NewServer(httpapi.Handler(reg, func() index.CacheStats { return index.CacheStats{Hits: 7, Misses: 3} },
		httpapi.Probes{Ready: func() error {
			if !ready.Load() {
				return errors.New("starting")
			}
			return nil
		}, Alive: func() error {
			if wedged.Load() {
				return errors.New("the mount does not answer")
			}
			return nil
		}}))
	defer srv.Close()

	if code, _ := get(t, srv, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	wedged.Store(true)
	if code, body := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "does not answer") {
		t.Errorf("/healthz of a wedged daemon = %d %q, want 503 with the reason", code, body)
	}
	wedged.Store(false)
	if code, _ := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get(t, srv, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready = %d", code)
	}

	_, body := get(t, srv, "/status")
	var rep status.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/status is not a report: %v\n%s", err, body)
	}
	if len(rep.Images) != 1 || rep.Images[0].BytesDone != 250 || rep.Images[0].State != status.Indexing {
		t.Errorf("/status images = %+v; want one indexing image with 250 of 1000 bytes done", rep.Images)
	}

	_, metrics := get(t, srv, "/metrics")
	for _, want := range []string{`explodefs_images{state="indexing"} 1`, `explodefs_span_cache_requests_total{result="hit"} 7`, `explodefs_layer_bytes_indexed 250`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get(t, srv, "/debug/pprof/"); code == http.StatusOK {
		t.Error("pprof is served without being asked for")
	}
}

// The metrics the daemon's parts feed, and the bytes inflated of the span
// cache, are served and move with what they count.
func TestMetricsMove(t *testing.T) {
	reg := status.NewRegistry()
	var inflated atomic.Int64
	obs := metrics.New()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.sst"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	queued := atomic.Int64{}
	srv := httptest.NewServer(httpapi.Handler(reg, func() index.CacheStats { return index.CacheStats{Inflated: inflated.Load()} },
		httpapi.Probes{Ready: func() error { return nil }},
		obs, metrics.QueueLength(func() int { return int(queued.Load()) }),
		metrics.NewDiskUsage(time.Hour, metrics.DiskPart{Name: "index", Dir: dir})))
	defer srv.Close()

	before := metricstest.Scrape(t, srv.URL+"/metrics")
	for key, want := range map[string]float64{
		"explodefs_bytes_inflated_total":                               0,
		"explodefs_fuse_read_duration_seconds_count":                   0,
		"explodefs_materialize_duration_seconds_count{result=success}": 0,
		"explodefs_materialize_queue_length":                           0,
	} {
		if got, ok := before[key]; !ok || got != want {
			t.Errorf("before: %s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	if got := before["explodefs_disk_bytes{part=index}"]; got < 1<<20 {
		t.Errorf("disk bytes of an index of a 1 MiB file: %v", got)
	}

	inflated.Add(3 << 20)
	queued.Store(2)
	obs.ObserveRead(4 * time.Millisecond)
	obs.ObserveCommit(2*time.Second, nil)
	obs.RegistryError("blob_read", "connection")
	obs.WatchRestarted("watch")
	after := metricstest.Scrape(t, srv.URL+"/metrics")
	for key, want := range map[string]float64{
		"explodefs_bytes_inflated_total":                                 3 << 20,
		"explodefs_fuse_read_duration_seconds_count":                     1,
		"explodefs_materialize_duration_seconds_count{result=success}":   1,
		"explodefs_materialize_duration_seconds_sum{result=success}":     2,
		"explodefs_materialize_queue_length":                             2,
		"explodefs_registry_errors_total{class=connection,op=blob_read}": 1,
		"explodefs_watch_restarts_total{kind=watch}":                     1,
	} {
		if got, ok := after[key]; !ok || got != want {
			t.Errorf("after: %s = %v (present %v), want %v", key, got, ok, want)
		}
	}
}
