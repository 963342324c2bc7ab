package openshift

import (
	"context"
	"sync/atomic"
	"time"

	imagev1 "github.com/openshift/api/image/v1"
	imageclient "github.com/openshift/client-go/image/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// RestartObserver hears when the informer lists or watches again. The
// informer restarts by itself; how often it does tells an operator how
// healthy the connection to the API server is.
type RestartObserver interface {
	// WatchRestarted is given RestartList when every stream is listed
	// again (the API server was unreachable, a watch failed, or it
	// answered 410 Gone), or RestartWatch when a new watch is opened
	// (after each of those, and routinely when the API server ends a
	// watch after its timeout).
	WatchRestarted(kind string)
}

// What a RestartObserver hears restarted.
const (
	RestartList  = "list"
	RestartWatch = "watch"
)

// WithRestartObserver reports the informer's restarts to obs, for
// metrics.
func WithRestartObserver(obs RestartObserver) Option { return func(s *Source) { s.restarts = obs } }

// newInformer is the informer factory's ImageStream informer with its
// lists and watches counted: the first of each is the start, every later
// one a restart.
func (s *Source) newInformer(client imageclient.Interface, resync time.Duration) cache.SharedIndexInformer {
	var lists, watches atomic.Int64
	note := func(n *atomic.Int64, kind string) {
		if n.Add(1) > 1 && s.restarts != nil {
			s.restarts.WatchRestarted(kind)
		}
	}
	streams := client.ImageV1().ImageStreams(s.namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			if opts.Continue == "" { // later pages belong to the same list
				note(&lists, RestartList)
			}
			return streams.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			note(&watches, RestartWatch)
			return streams.Watch(ctx, opts)
		},
	}
	return cache.NewSharedIndexInformer(lw, &imagev1.ImageStream{}, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}
