// Package metrics holds the Prometheus collectors that the daemon's parts
// feed while they work: the FUSE read latency, materialization times and
// queue, registry errors, watch restarts, and the disk the state takes.
//
// Each part declares the small interface it reports through (fs's
// ReadObserver, ostree's CommitObserver, registry's ErrorObserver,
// openshift's RestartObserver); Metrics implements them all, so the parts
// never import this package. One Metrics is made per daemon and
// registered with explode/httpapi, next to the metrics it derives from
// the status at scrape time.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is the collectors fed by events. It is safe for concurrent use;
// every method is a few atomic operations.
type Metrics struct {
	reads          prometheus.Histogram
	commits        *prometheus.HistogramVec
	commitOK       prometheus.Observer
	commitFailed   prometheus.Observer
	registryErrors *prometheus.CounterVec
	watchRestarts  *prometheus.CounterVec
}

// Bucket bounds, in seconds.
var (
	// readBuckets span 50µs (a read of a cached span) to 5s (a cold read
	// of a slow registry), about ×2.15 apart: 0.5, 5, 50 and 500 ms are
	// bounds.
	readBuckets = prometheus.ExponentialBucketsRange(50e-6, 5, 16)
	// commitBuckets span 0.1 s (a small image, or one whose layers are
	// committed already) to about 27 minutes.
	commitBuckets = prometheus.ExponentialBuckets(0.1, 2, 15)
)

// Results of a commit, as the materialize duration's label says them.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// New returns a daemon's collectors, all at zero.
func New() *Metrics {
	m := &Metrics{
		reads: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "explodefs_fuse_read_duration_seconds",
			Help:    "Time the daemon took to answer READ requests for image files: lazy reads (passthrough reads never reach it).",
			Buckets: readBuckets,
		}),
		commits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "explodefs_materialize_duration_seconds",
			Help:    "Time each image's OSTree commit took, by result.",
			Buckets: commitBuckets,
		}, []string{"result"}),
		registryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "explodefs_registry_errors_total",
			Help: "Failed requests to the registry API, retried attempts included, by operation (handshake, blob_head, blob_read, manifest) and class (not_found, 4xx, 5xx, connection, other).",
		}, []string{"op", "class"}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "explodefs_watch_restarts_total",
			Help: "Times the openshift source's ImageStream informer listed everything again (kind=list) or opened a new watch (kind=watch) after its start.",
		}, []string{"kind"}),
	}
	// Both results exist from the start, so that a rate of failures is
	// 0 rather than absent.
	m.commitOK, m.commitFailed = m.commits.WithLabelValues(ResultSuccess), m.commits.WithLabelValues(ResultFailure)
	return m
}

// ObserveRead implements fs.ReadObserver.
func (m *Metrics) ObserveRead(took time.Duration) { m.reads.Observe(took.Seconds()) }

// ObserveCommit implements ostree.CommitObserver.
func (m *Metrics) ObserveCommit(took time.Duration, err error) {
	if err != nil {
		m.commitFailed.Observe(took.Seconds())
		return
	}
	m.commitOK.Observe(took.Seconds())
}

// RegistryError implements registry.ErrorObserver.
func (m *Metrics) RegistryError(op, class string) { m.registryErrors.WithLabelValues(op, class).Inc() }

// WatchRestarted implements openshift.RestartObserver.
func (m *Metrics) WatchRestarted(kind string) { m.watchRestarts.WithLabelValues(kind).Inc() }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.reads, m.commits, m.registryErrors, m.watchRestarts}
}

// QueueLength is the gauge of images waiting for their OSTree commit;
// queued is asked at each scrape (the materializer's Queued).
func QueueLength(queued func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "explodefs_materialize_queue_length",
		Help: "Images waiting for their OSTree commit: new ones, and failed ones waiting to be tried again.",
	}, func() float64 { return float64(queued()) })
}
