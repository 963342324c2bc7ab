package main

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/gc"
	"github.com/explodefs/explodefs/explode/httpapi"
	"github.com/explodefs/explodefs/explode/manifest"
	"github.com/explodefs/explodefs/explode/metrics"
	"github.com/explodefs/explodefs/explode/ostree"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/source/ocidir"
	"github.com/explodefs/explodefs/explode/status"
	explodefs "github.com/explodefs/explodefs/fs"
	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
)

const defaultListen = "127.0.0.1:9797"

type serveConfig struct {
	source       string
	mountpoint   string
	stateDir     string
	listen       string
	platform     string
	spanCacheMiB int64
	spanSizeKiB  int64
	allowSuid    bool
	allowDevices bool
	allowOther   bool
	imageWorkers int
	layerPasses  int
	maxLayerSize string
	imageTimeout time.Duration
	resync       time.Duration
	retryBackoff time.Duration
	retryMax     time.Duration
	shutdownWait time.Duration
	logLevel     string
	logFormat    string
	fuseDebug    bool
	pprof        bool
	materialize  bool
	ostreeRepo   string
	gcEvery      time.Duration
	gcGrace      time.Duration
	cluster      clusterConfig
}

func newServeCommand() *cobra.Command {
	var c serveConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Watch a source, index its images and serve them in a FUSE mount",
		Long: `serve watches image streams, indexes each new layer in one pass and shows
every tagged image at <mountpoint>/<namespace>/<stream>/<tag>, a symlink to
the image's immutable root <mountpoint>/<namespace>/<stream>/@sha256:<hex>/.

Every flag can also be set through the environment variable named in its help.`,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.source, "source", "oci-dir:/var/lib/explodefs/images", "where image streams come from: openshift (ImageStreams of the cluster), or oci-dir:PATH (PATH/<namespace>/<stream>/ are OCI layouts)")
	f.StringVar(&c.mountpoint, "mountpoint", "/var/lib/explodefs/mnt", "where the read-only tree is mounted")
	f.StringVar(&c.stateDir, "state-dir", "/var/lib/explodefs/state", "where the index and caches live")
	f.StringVar(&c.listen, "listen", defaultListen, "address for /healthz, /readyz, /metrics and /status; empty disables")
	f.StringVar(&c.platform, "platform", "linux/"+runtime.GOARCH, "platform picked from image indexes and manifest lists (os/arch[/variant])")
	f.Int64Var(&c.spanCacheMiB, "span-cache-mib", index.DefaultCacheSize>>20, "memory for inflated spans, in MiB")
	f.Int64Var(&c.spanSizeKiB, "span-size-kib", index.DefaultSpanSize>>10, "uncompressed bytes between decompression checkpoints, in KiB; bounds the work of a cold read")
	f.BoolVar(&c.allowSuid, "allow-suid", false, "mount without nosuid, so that runc can use setuid binaries of an image; with --allow-other any local user can then run them as their owner")
	f.BoolVar(&c.allowDevices, "allow-devices", false, "mount without nodev, so that device nodes of images open host devices")
	f.BoolVar(&c.allowOther, "allow-other", true, "let users other than the daemon's read the mount (the kernel enforces the image's modes)")
	f.IntVar(&c.imageWorkers, "image-workers", 2, "images resolved and merged at once")
	f.StringVar(&c.maxLayerSize, "max-layer-size", "64GiB", "largest uncompressed layer a pass accepts (e.g. 64GiB); a layer beyond it fails")
	f.IntVar(&c.layerPasses, "layer-passes", 2*runtime.NumCPU(), "layer passes run at once; more than the CPUs lets the layers of one image share them instead of queueing")
	f.DurationVar(&c.imageTimeout, "image-cache-timeout", time.Hour, "how long the kernel caches names and attributes of immutable image content")
	f.DurationVar(&c.resync, "resync", 30*time.Second, "full rescan interval of the source, besides change events")
	f.DurationVar(&c.retryBackoff, "retry-backoff", 10*time.Second, "first wait before an image that failed for a passing reason is tried again; doubles per attempt")
	f.DurationVar(&c.retryMax, "retry-max", 5*time.Minute, "longest wait between attempts; images that failed on their content are looked at this often and passed again only when a blob changed")
	f.DurationVar(&c.shutdownWait, "shutdown-timeout", 5*time.Second, "how long a busy mount is given to unmount before it is detached lazily")
	f.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&c.logFormat, "log-format", "text", "text or json")
	f.BoolVar(&c.fuseDebug, "fuse-debug", false, "log every FUSE request")
	f.BoolVar(&c.pprof, "pprof", false, "serve Go's /debug/pprof on the listener")
	f.BoolVar(&c.materialize, "materialize", true, "write every image as an OSTree commit in the background, and serve reads of committed images by FUSE passthrough")
	f.StringVar(&c.ostreeRepo, "ostree-repo", "", "the OSTree repository images are committed to (bare as root, bare-user otherwise); default <state-dir>/ostree")
	legacyEnv(f, "ostree-repo", "OSTREE_REPO_PATH")
	f.DurationVar(&c.gcEvery, "gc-interval", time.Hour, "how often what no stream references is collected: index records and caches of layers past --gc-grace, OSTree refs and records of images, unreachable OSTree objects; 0 disables (explodefs gc still works)")
	legacyEnv(f, "gc-interval", "EXPLODEFS_PRUNE_INTERVAL")
	f.DurationVar(&c.gcGrace, "gc-grace", time.Hour, "how long a layer's index and caches stay after the last image holding it left every stream")
	addClusterFlags(f, &c.cluster)
	bindEnv(f)
	return cmd
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// newSource makes the source spec names; obs, when set, counts what its
// registry and watches do.
func newSource(spec string, c serveConfig, log *slog.Logger, obs *metrics.Metrics) (source.Source, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "oci-dir":
		if arg == "" {
			return nil, errors.New("source oci-dir needs a path: oci-dir:PATH")
		}
		return ocidir.New(arg, ocidir.WithLogger(log), ocidir.WithResync(c.resync)), nil
	case "openshift":
		return newOpenShiftSource(c.cluster, c.resync, log, obs)
	}
	return nil, fmt.Errorf("source %q: unknown kind %q (supported: openshift, oci-dir:PATH)", spec, kind)
}

func serve(parent context.Context, c serveConfig) error {
	log, err := newLogger(c.logLevel, c.logFormat)
	if err != nil {
		return err
	}
	platform, err := manifest.ParsePlatform(c.platform)
	if err != nil {
		return err
	}
	maxLayerSize, err := humanize.ParseBytes(c.maxLayerSize)
	if err != nil || maxLayerSize == 0 || maxLayerSize > math.MaxInt64 {
		return fmt.Errorf("--max-layer-size %q: want a positive size such as 64GiB", c.maxLayerSize)
	}
	// The collectors the daemon's parts feed, one set per daemon.
	obs := metrics.New()
	src, err := newSource(c.source, c, log, obs)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(c.stateDir, 0o755); err != nil {
		return err
	}
	// A stale mount left by a killed daemon fails stat with ENOTCONN;
	// Mount clears it, so only a missing mountpoint is created here.
	if _, err := os.Lstat(c.mountpoint); errors.Is(err, iofs.ErrNotExist) {
		if err := os.MkdirAll(c.mountpoint, 0o755); err != nil {
			return err
		}
	}
	indexDir := filepath.Join(c.stateDir, "index")
	store, err := badgerstore.Open(indexDir, badgerstore.WithLogger(log))
	if err != nil {
		return err
	}
	defer store.Close()
	cacheDir := filepath.Join(c.stateDir, "cache")
	// The controller knows which sources hold each layer; the reader
	// asks it when it opens one.
	var ctrl *controller.Controller
	reader := index.NewReader(store, index.BlobOpenerFunc(func(ctx context.Context, d digest.Digest) (index.Blob, error) {
		return ctrl.OpenLayer(ctx, d)
	}), index.ReaderOptions{
		CacheDir:   cacheDir,
		CacheBytes: c.spanCacheMiB << 20,
		OnCorrupt:  func(layer digest.Digest, err error) { ctrl.LayerDamaged(layer, err) },
	})
	defer reader.Close()

	reg := status.NewRegistry()
	collectors := []prometheus.Collector{obs}
	diskParts := []metrics.DiskPart{{Name: "index", Dir: indexDir}, {Name: "cache", Dir: cacheDir}}
	var mat *ostree.Materializer
	if c.materialize {
		repo := c.ostreeRepo
		if repo == "" {
			repo = filepath.Join(c.stateDir, "ostree")
		}
		mat, err = ostree.New(store, reader, reg, ostree.Options{RepoPath: repo, Commits: obs, Logger: log})
		if err != nil {
			return err
		}
		collectors = append(collectors, metrics.QueueLength(mat.Queued))
		diskParts = append(diskParts, metrics.DiskPart{Name: "ostree", Dir: repo})
		defer mat.Close()
		path, mode := mat.Repo()
		log.Info("materializing images as OSTree commits", "repo", path, "mode", mode.String())
	}
	collectors = append(collectors, metrics.NewDiskUsage(metrics.DefaultDiskInterval, diskParts...))

	if c.allowSuid && c.allowOther {
		log.Warn("--allow-suid with --allow-other lets any local user run the images' setuid binaries as their owners")
	}
	fsOpts := explodefs.Options{
		AllowOther:   c.allowOther,
		AllowSuid:    c.allowSuid,
		AllowDevices: c.allowDevices,
		ImageTimeout: c.imageTimeout,
		Reads:        obs,
		Logger:       log,
		Debug:        c.fuseDebug,
	}
	if mat != nil {
		// Reads of committed images pass through to their OSTree objects.
		fsOpts.Backer = mat
	}
	root := explodefs.NewRoot(reader, fsOpts)
	server, err := explodefs.Mount(c.mountpoint, root, fsOpts)
	if err != nil {
		return fmt.Errorf("mounting at %s: %w", c.mountpoint, err)
	}
	var unmountOnce sync.Once
	unmount := func() {
		unmountOnce.Do(func() {
			if err := explodefs.Unmount(server, c.mountpoint, c.shutdownWait, log); err != nil {
				log.Error("unmount failed; clear it with umount -l", "mountpoint", c.mountpoint, "err", err)
			}
		})
	}
	defer unmount()
	log.Info("mounted", "mountpoint", c.mountpoint, "source", c.source, "state", c.stateDir)
	reg.SetMount(func() status.Mount {
		st := root.Stats()
		return status.Mount{Passthrough: root.Passthrough(), Reads: st.Reads, LazyOpens: st.LazyOpens,
			PassthroughOpens: st.PassthroughOpens, BackingFiles: st.BackingFiles}
	})

	var pub controller.Publisher = root
	if mat != nil {
		pub = controller.Publishers{root, mat}
	}
	ctrl = controller.New(store, reader, pub, reg, controller.Options{
		Platform:     platform,
		ImageWorkers: c.imageWorkers,
		LayerPasses:  c.layerPasses,
		SpanSize:     c.spanSizeKiB << 10,
		CacheDir:     cacheDir,
		MaxLayerSize: int64(maxLayerSize),
		RetryBackoff: c.retryBackoff,
		RetryMax:     c.retryMax,
		Logger:       log,
	})

	collector := &gcCollector{gc.Collector{Layers: ctrl, Grace: c.gcGrace, Log: log}}
	if mat != nil {
		collector.Repo = mat
	}

	var ready atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 4)
	if c.listen != "" {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", c.listen, err)
		}
		srv := &http.Server{Handler: httpapi.Handler(reg, reader.CacheStats, httpapi.Probes{Ready: func() error {
			if !ready.Load() {
				return errors.New("starting")
			}
			if !ctrl.Ready() {
				return errors.New("the first scan of the source has not finished")
			}
			return nil
		}, Alive: newMountProbe(c.mountpoint).alive, Profiling: c.pprof, GC: collector.collect}, collectors...), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http listener: %w", err)
			}
		})
		defer srv.Close() // runs before wg.Wait
		log.Info("listening", "addr", ln.Addr().String())
	}
	// The controller and source use the store; they must stop before the
	// deferred store.Close runs.
	var workers sync.WaitGroup
	defer workers.Wait()
	workers.Go(func() { ctrl.Run(ctx) })
	if mat != nil {
		mat.SetWants(ctrl)
		workers.Go(func() { mat.Run(ctx) })
	}
	workers.Go(func() { collector.Run(ctx, c.gcEvery) })
	workers.Go(func() {
		if err := src.Run(ctx, ctrl); err != nil {
			errc <- fmt.Errorf("source %s: %w", c.source, err)
		}
	})
	// Not in wg: a mount detached while busy keeps serving until its
	// last file is closed, and shutdown must not wait for that.
	go func() {
		server.Wait()
		errc <- errors.New("the FUSE mount went away")
	}()
	ready.Store(true)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		err = nil
	case err = <-errc:
		log.Error("stopping", "err", err)
	}
	stop()
	unmount()
	return err
}

// gcCollector adapts gc.Collector to the /gc endpoint.
type gcCollector struct{ gc.Collector }

func (g *gcCollector) collect(ctx context.Context, dryRun bool) (any, error) {
	return g.Collect(ctx, dryRun)
}
