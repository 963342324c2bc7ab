// Package httpapi serves the daemon's operational endpoints: /healthz,
// /readyz, /metrics (Prometheus) and /status (JSON of every image and
// layer).
package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// Probes tell whether the daemon is alive and ready.
type Probes struct {
	// Alive, when set, reports nil while the daemon can serve: the FUSE
	// mount answers. /healthz fails otherwise, so that a wedged daemon is
	// restarted.
	Alive func() error
	// Ready reports nil once the mount is up and the first scan of the
	// source was delivered.
	Ready func() error
	// Profiling adds Go's /debug/pprof endpoints.
	Profiling bool
	// GC, when set, serves POST /gc: it runs a garbage collection now and
	// answers with what it did, as JSON.
	// With ?dry-run=true it only says what would go.
	GC func(ctx context.Context, dryRun bool) (any, error)
}

// Handler returns the mux with every endpoint. /metrics serves what it
// derives from reg and cache at each scrape, Go's and the process's
// metrics, and the extra collectors: those the daemon's parts feed as
// they work (explode/metrics).
func Handler(reg *status.Registry, cache func() index.CacheStats, probes Probes, extra ...prometheus.Collector) http.Handler {
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&statusCollector{reg: reg, cache: cache},
	)
	metrics.MustRegister(extra...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if probes.Alive != nil {
			if err := probes.Alive(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := probes.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reg.Snapshot())
	})
	if probes.GC != nil {
		mux.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) {
			dryRun, _ := strconv.ParseBool(r.URL.Query().Get("dry-run"))
			res, err := probes.GC(r.Context(), dryRun)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(res)
		})
	}
	if probes.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

var (
	imagesDesc   = prometheus.NewDesc("explodefs_images", "Images by state.", []string{"state"}, nil)
	layersDesc   = prometheus.NewDesc("explodefs_layers", "Layers by state.", []string{"state"}, nil)
	bytesDesc    = prometheus.NewDesc("explodefs_layer_bytes_indexed", "Compressed bytes read by layer passes, including running ones.", nil, nil)
	cacheDesc    = prometheus.NewDesc("explodefs_span_cache_requests_total", "Span cache lookups by result.", []string{"result"}, nil)
	cacheBytes   = prometheus.NewDesc("explodefs_span_cache_bytes", "Bytes of inflated spans held in the cache.", nil, nil)
	inflatedDesc = prometheus.NewDesc("explodefs_bytes_inflated_total", "Bytes inflated from gzip layers' checkpoints by lazy reads and their read-ahead, including reads of the materializer.", nil, nil)
	readsDesc    = prometheus.NewDesc("explodefs_fuse_image_reads_total", "READ requests for image files the daemon answered (passthrough reads never reach it).", nil, nil)
	opensDesc    = prometheus.NewDesc("explodefs_fuse_image_opens_total", "Opens of image files answered, by mode.", []string{"mode"}, nil)
	matDesc      = prometheus.NewDesc("explodefs_images_materialized", "Images by OSTree materialization state.", []string{"state"}, nil)
)

// statusCollector derives metrics from the status registry at scrape time,
// so there is one source of truth and no counters to keep in step.
type statusCollector struct {
	reg   *status.Registry
	cache func() index.CacheStats
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{imagesDesc, layersDesc, bytesDesc, cacheDesc, cacheBytes, inflatedDesc, readsDesc, opensDesc, matDesc} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	rep := c.reg.Snapshot()
	states := []status.State{status.Pending, status.Indexing, status.Ready, status.Failed}
	images, layers := map[status.State]int{}, map[status.State]int{}
	var done int64
	materialized := map[string]int{}
	for _, img := range rep.Images {
		images[img.State]++
		if img.Materialized != nil {
			materialized[img.Materialized.State]++
		}
	}
	for _, s := range []string{"pending", "running", "done", "failed"} {
		ch <- prometheus.MustNewConstMetric(matDesc, prometheus.GaugeValue, float64(materialized[s]), s)
	}
	if m := rep.Mount; m != nil {
		ch <- prometheus.MustNewConstMetric(readsDesc, prometheus.CounterValue, float64(m.Reads))
		ch <- prometheus.MustNewConstMetric(opensDesc, prometheus.CounterValue, float64(m.LazyOpens), "lazy")
		ch <- prometheus.MustNewConstMetric(opensDesc, prometheus.CounterValue, float64(m.PassthroughOpens), "passthrough")
	}
	for _, l := range rep.Layers {
		layers[l.State]++
		done += l.BytesDone
	}
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(images[s]), string(s))
		ch <- prometheus.MustNewConstMetric(layersDesc, prometheus.GaugeValue, float64(layers[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(done))
	st := c.cache()
	ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(st.Hits), "hit")
	ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(st.Misses), "miss")
	ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(inflatedDesc, prometheus.CounterValue, float64(st.Inflated))
}
