package openshift_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	imagev1 "github.com/openshift/api/image/v1"
	"github.com/openshift/client-go/image/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/source/openshift"
)

const registry = "image-registry.openshift-image-registry.svc:5000"

func img(n byte) digest.Digest {
	return digest.FromBytes([]byte{n})
}

func item(host, ns, name string, d digest.Digest) imagev1.TagEvent {
	return imagev1.TagEvent{Image: d.String(), DockerImageReference: host + "/" + ns + "/" + name + "@" + d.String(), Created: metav1.Now()}
}

func stream(ns, name string, tags ...imagev1.NamedTagEventList) *imagev1.ImageStream {
	return &imagev1.ImageStream{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status:     imagev1.ImageStreamStatus{DockerImageRepository: registry + "/" + ns + "/" + name, Tags: tags},
	}
}

// sink records what the source reports.
type sink struct {
	mu      sync.Mutex
	streams map[string]source.Stream
	synced  bool
	seenAt  map[string]int // how many changes each stream got
}

func (s *sink) StreamChanged(st source.Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[st.Key()] = st
	s.seenAt[st.Key()]++
}

func (s *sink) StreamRemoved(ns, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, ns+"/"+name)
}

func (s *sink) StreamFailed(string, string, error) {}

func (s *sink) Synced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = true
}

func (s *sink) get(key string) (source.Stream, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	return st, ok
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func run(t *testing.T, client *fake.Clientset, opts ...openshift.Option) *sink {
	t.Helper()
	s := &sink{streams: map[string]source.Stream{}, seenAt: map[string]int{}}
	blobsFor := func(ns, name string) blob.Source { return ocilayout.New("/nonexistent/" + ns + "/" + name) }
	opts = append([]openshift.Option{openshift.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	src := openshift.New(client, blobsFor, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("source: %v", err)
		}
	})
	return s
}

// Tags show their current image; history items are shown too, current
// images first; an empty history or a stream without status is no error.
func TestStreamsFromStatus(t *testing.T) {
	client := fake.NewSimpleClientset(
		stream("ns", "app",
			imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(2)), item(registry, "ns", "app", img(1))}},
			imagev1.NamedTagEventList{Tag: "v1", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(1))}},
			imagev1.NamedTagEventList{Tag: "empty"},
		),
		&imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "new"}},
	)
	s := run(t, client)
	eventually(t, "the first sync", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.synced })
	app, ok := s.get("ns/app")
	if !ok {
		t.Fatal("ns/app not reported before Synced")
	}
	if app.Tags["latest"] != img(2) || app.Tags["v1"] != img(1) || len(app.Tags) != 2 {
		t.Errorf("tags %v", app.Tags)
	}
	if len(app.History) != 2 || app.History[0] != img(2) && app.History[0] != img(1) {
		t.Errorf("history %v; want both images, current ones first", app.History)
	}
	if app.Blobs == nil || !strings.Contains(app.Blobs.String(), "ns/app") {
		t.Errorf("blob source %v is not the stream's", app.Blobs)
	}
	if st, ok := s.get("ns/new"); !ok || len(st.Tags) != 0 {
		t.Errorf("stream without status: %+v, %v; want it reported empty", st, ok)
	}
}

// Images outside the integrated registry are skipped with a reason,
// unless external images are opted in.
func TestExternalImagesSkipped(t *testing.T) {
	is := stream("ns", "mixed",
		imagev1.NamedTagEventList{Tag: "internal", Items: []imagev1.TagEvent{item(registry, "ns", "mixed", img(1))}},
		imagev1.NamedTagEventList{Tag: "external", Items: []imagev1.TagEvent{item("quay.io", "org", "thing", img(2))}},
	)
	for _, external := range []bool{false, true} {
		s := run(t, fake.NewSimpleClientset(is.DeepCopy()), openshift.WithFilter(openshift.Filter{External: external}))
		eventually(t, "the stream", func() bool { _, ok := s.get("ns/mixed"); return ok })
		st, _ := s.get("ns/mixed")
		if st.Tags["internal"] != img(1) {
			t.Errorf("external=%v: internal tag %v", external, st.Tags)
		}
		_, shown := st.Tags["external"]
		reason := st.Skipped[img(2)]
		if external != shown || external == (reason != "") {
			t.Errorf("external=%v: external tag shown %v, skipped %q", external, shown, reason)
		}
		if !external && !strings.Contains(reason, "quay.io") {
			t.Errorf("reason %q does not name the registry", reason)
		}
	}
}

// Updates move tags; deletion removes the stream; one namespace can be
// watched alone; history depth limits items per tag.
func TestUpdatesDeletesNamespaceAndDepth(t *testing.T) {
	client := fake.NewSimpleClientset(
		stream("ns", "app", imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(1))}}),
		stream("other", "app", imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "other", "app", img(1))}}),
	)
	s := run(t, client, openshift.WithNamespace("ns"), openshift.WithFilter(openshift.Filter{HistoryDepth: 1}))
	eventually(t, "ns/app", func() bool { _, ok := s.get("ns/app"); return ok })
	if _, ok := s.get("other/app"); ok {
		t.Error("a stream of another namespace was reported")
	}
	moved := stream("ns", "app", imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(3)), item(registry, "ns", "app", img(1))}})
	if _, err := client.ImageV1().ImageStreams("ns").Update(context.Background(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the tag moves", func() bool { st, _ := s.get("ns/app"); return st.Tags["latest"] == img(3) })
	if st, _ := s.get("ns/app"); len(st.History) != 1 {
		t.Errorf("history %v with depth 1", st.History)
	}
	if err := client.ImageV1().ImageStreams("ns").Delete(context.Background(), "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream goes", func() bool { _, ok := s.get("ns/app"); return !ok })
}

// An update that changes nothing the controller follows (a resync, a
// label) is not passed on.
func TestUnchangedStreamNotRedelivered(t *testing.T) {
	is := stream("ns", "app", imagev1.NamedTagEventList{Tag: "latest", Items: []imagev1.TagEvent{item(registry, "ns", "app", img(1))}})
	client := fake.NewSimpleClientset(is.DeepCopy())
	s := run(t, client)
	eventually(t, "ns/app", func() bool { _, ok := s.get("ns/app"); return ok })
	labelled := is.DeepCopy()
	labelled.Labels = map[string]string{"touched": "yes"}
	if _, err := client.ImageV1().ImageStreams("ns").Update(context.Background(), labelled, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	moved := labelled.DeepCopy()
	moved.Status.Tags[0].Items = append([]imagev1.TagEvent{item(registry, "ns", "app", img(2))}, moved.Status.Tags[0].Items...)
	if _, err := client.ImageV1().ImageStreams("ns").Update(context.Background(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the tag moves", func() bool { st, _ := s.get("ns/app"); return st.Tags["latest"] == img(2) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.seenAt["ns/app"]; n != 2 {
		t.Errorf("%d changes delivered; want 2 (the label alone changes nothing)", n)
	}
}
