// Package openshift is the source that follows OpenShift ImageStreams
// (image.openshift.io/v1) through shared informers, in all namespaces or
// one. Every tag's current image and its history become a source.Stream;
// images outside the cluster's integrated registry are skipped with a
// reason unless external images are opted in.
package openshift

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	imagev1 "github.com/openshift/api/image/v1"
	imageclient "github.com/openshift/client-go/image/clientset/versioned"
	imageinformers "github.com/openshift/client-go/image/informers/externalversions"
	imagelisters "github.com/openshift/client-go/image/listers/image/v1"
	"k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/source"
)

// BlobsFor returns the blob source of one stream: where its manifests,
// configs and layers are read from.
type BlobsFor func(namespace, stream string) blob.Source

// Source watches ImageStreams.
type Source struct {
	client    imageclient.Interface
	blobsFor  BlobsFor
	namespace string
	filter    Filter
	resync    time.Duration
	log       *slog.Logger
	restarts  RestartObserver
}

var _ source.Source = (*Source)(nil)

// Option tunes a Source.
type Option func(*Source)

// WithNamespace watches one namespace instead of all.
func WithNamespace(ns string) Option { return func(s *Source) { s.namespace = ns } }

// WithFilter sets which images are exploded; see Filter.
func WithFilter(f Filter) Option { return func(s *Source) { s.filter = f } }

// WithResync sets the informers' resync period: every stream is handled
// again this often, as a safety net.
func WithResync(d time.Duration) Option { return func(s *Source) { s.resync = d } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// New returns a Source that lists and watches ImageStreams through client
// and reads each stream's blobs through blobsFor.
func New(client imageclient.Interface, blobsFor BlobsFor, opts ...Option) *Source {
	s := &Source{client: client, blobsFor: blobsFor, resync: 10 * time.Minute, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Run reports every stream to sink until ctx ends. Events go through a
// rate-limited workqueue keyed by stream, so a burst of updates to one
// stream is handled once, with its latest state. The informer relists
// after a watch drop or a 410 Gone by itself (WithRestartObserver hears
// of it), and the queue is fed from the informer's cache, so no update is
// lost.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	// The factory starts and stops the informer; newInformer builds it,
	// for the namespace watched, so that its restarts can be counted.
	factory := imageinformers.NewSharedInformerFactory(s.client, s.resync)
	informer := factory.InformerFor(&imagev1.ImageStream{}, s.newInformer)
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "imagestreams"})
	defer queue.ShutDown()

	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			s.log.Warn("imagestream event without a key", "err", err)
			return
		}
		queue.Add(key)
	}
	handler, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	if err != nil {
		return fmt.Errorf("watching imagestreams: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// The handler's HasSynced, unlike the informer's, also waits until the
	// handler has seen every object of the first list.
	if !cache.WaitForCacheSync(ctx.Done(), handler.HasSynced) {
		return ctx.Err()
	}
	lister := imagelisters.NewImageStreamLister(informer.GetIndexer())
	// Resyncs and unrelated updates redeliver streams that did not
	// change; only changes reach the sink, so backoffs downstream hold.
	reported := map[string]source.Stream{}
	// The first list is in the cache: report all of it before Synced.
	initial := queue.Len()
	for range initial {
		if !s.processNext(queue, lister, sink, reported) {
			return nil
		}
	}
	sink.Synced()
	s.log.Info("imagestreams synced", "namespace", s.namespaceName(), "streams", initial)
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for s.processNext(queue, lister, sink, reported) {
	}
	return nil
}

func (s *Source) namespaceName() string {
	if s.namespace == "" {
		return "(all)"
	}
	return s.namespace
}

// processNext handles one queued stream; false means the queue shut down.
func (s *Source) processNext(queue workqueue.TypedRateLimitingInterface[string], lister imagelisters.ImageStreamLister, sink source.Sink, reported map[string]source.Stream) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		queue.Forget(key)
		return true
	}
	is, err := lister.ImageStreams(ns).Get(name)
	switch {
	case errors.IsNotFound(err):
		delete(reported, key)
		sink.StreamRemoved(ns, name)
	case err != nil:
		s.log.Warn("reading imagestream from the cache; retrying", "stream", key, "err", err)
		queue.AddRateLimited(key)
		return true
	default:
		st, err := s.stream(is)
		if err != nil {
			sink.StreamFailed(ns, name, err)
			break
		}
		if last, ok := reported[key]; ok && last.Equal(st) {
			break
		}
		reported[key] = st
		sink.StreamChanged(st)
	}
	queue.Forget(key)
	return true
}

// stream turns an ImageStream into the stream the controller follows.
func (s *Source) stream(is *imagev1.ImageStream) (source.Stream, error) {
	if err := source.ValidateNames(is.Namespace, is.Name); err != nil {
		return source.Stream{}, err
	}
	st := source.Stream{
		Namespace: is.Namespace,
		Name:      is.Name,
		Tags:      map[string]digest.Digest{},
		Skipped:   map[digest.Digest]string{},
		Blobs:     s.blobsFor(is.Namespace, is.Name),
	}
	s.filter.apply(is, &st, s.log)
	return st, nil
}
