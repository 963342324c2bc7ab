package openshift_test

import (
	"net/http"
	"sync"
	"testing"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/openshift/client-go/image/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/explodefs/explodefs/explode/source/openshift"
)

// restarts records what WatchRestarted hears.
type restarts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *restarts) WatchRestarted(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[kind]++
}

func (r *restarts) get(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[kind]
}

// The informer's first list and watch are its start; a watch that ends
// with 410 Gone makes it list and watch again, and both are reported.
func TestWatchRestartsAreObserved(t *testing.T) {
	client := fake.NewSimpleClientset(stream("ns", "app",
		imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(1))}}))
	var mu sync.Mutex
	var watchers []*watch.FakeWatcher
	client.PrependWatchReactor("imagestreams", func(k8stesting.Action) (bool, watch.Interface, error) {
		w := watch.NewFake()
		mu.Lock()
		watchers = append(watchers, w)
		mu.Unlock()
		return true, w, nil
	})
	current := func() (*watch.FakeWatcher, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(watchers) == 0 {
			return nil, 0
		}
		return watchers[len(watchers)-1], len(watchers)
	}
	seen := &restarts{n: map[string]int{}}
	s := run(t, client, openshift.WithRestartObserver(seen))
	eventually(t, "the first sync and watch", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, n := current()
		return s.synced && n == 1
	})
	if l, w := seen.get(openshift.RestartList), seen.get(openshift.RestartWatch); l != 0 || w != 0 {
		t.Fatalf("the start was reported as %d list and %d watch restarts", l, w)
	}

	w, _ := current()
	w.Error(&metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired,
		Message: "too old resource version"})
	eventually(t, "a relist and a new watch", func() bool {
		_, n := current()
		return n == 2 && seen.get(openshift.RestartList) == 1 && seen.get(openshift.RestartWatch) == 1
	})
	if _, ok := s.get("ns/app"); !ok {
		t.Error("the stream went missing across the restart")
	}
}
