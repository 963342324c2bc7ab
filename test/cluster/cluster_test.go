package cluster_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/explodefs/explodefs/test/cluster"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func status(tag, digest string) cluster.ImageStreamStatus {
	return cluster.ImageStreamStatus{
		DockerImageRepository: "registry.test:5000/team-a/app",
		Tags: []cluster.NamedTagEventList{{
			Tag: tag,
			Items: []cluster.TagEvent{{
				Created:              time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
				DockerImageReference: "registry.test:5000/team-a/app@" + digest,
				Image:                digest,
				Generation:           1,
			}},
		}},
	}
}

// next reads events until one of type want arrives, failing on anything
// else but bookmarks.
func next(t *testing.T, w *cluster.Watch, want string) *cluster.ImageStream {
	t.Helper()
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if ev.Type == "BOOKMARK" {
			continue
		}
		if ev.Type != want {
			t.Fatalf("got %s event (%v), want %s", ev.Type, ev.Err(), want)
		}
		is, err := ev.ImageStream()
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
}

func currentImage(is *cluster.ImageStream) string {
	if len(is.Status.Tags) == 0 || len(is.Status.Tags[0].Items) == 0 {
		return ""
	}
	return is.Status.Tags[0].Items[0].Image
}

func TestImageStreamsWatchRestartAndRelist(t *testing.T) {
	start := time.Now()
	c := cluster.Start(t)
	t.Logf("etcd + API server up with CRDs established in %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Discovery answers, as a real cluster's does (the wrapper turns it on).
	var groups struct {
		Groups []struct{ Name string } `json:"groups"`
	}
	if err := c.Do(ctx, http.MethodGet, "/apis", nil, &groups); err != nil {
		t.Fatalf("discovery: %v", err)
	}
	listed := false
	for _, g := range groups.Groups {
		listed = listed || g.Name == cluster.Group
	}
	if !listed {
		t.Fatalf("/apis lists no image.openshift.io: %+v", groups)
	}
	var resources struct {
		Resources []struct {
			Name       string `json:"name"`
			Namespaced bool   `json:"namespaced"`
		} `json:"resources"`
	}
	if err := c.Do(ctx, http.MethodGet, "/apis/image.openshift.io/v1", nil, &resources); err != nil {
		t.Fatal(err)
	}
	scope := map[string]bool{}
	for _, r := range resources.Resources {
		scope[r.Name] = r.Namespaced
	}
	if ns, ok := scope["imagestreams"]; !ok || !ns {
		t.Errorf("imagestreams missing or cluster-scoped: %+v", resources)
	}
	if ns, ok := scope["images"]; !ok || ns {
		t.Errorf("images missing or namespaced: %+v", resources)
	}
	if _, ok := scope["imagestreams/status"]; !ok {
		t.Errorf("imagestreams has no status subresource: %+v", resources)
	}
	// There is no core API: a namespaced custom resource needs no Namespace.
	if err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces", nil, nil); cluster.StatusCode(err) != http.StatusNotFound {
		t.Errorf("core v1 namespaces: got %v, want 404", err)
	}
	kubeconfig, err := os.ReadFile(c.Kubeconfig)
	if err != nil || !strings.Contains(string(kubeconfig), "server: "+c.URL) {
		t.Errorf("kubeconfig %s does not name %s (%v)", c.Kubeconfig, c.URL, err)
	}

	created, err := c.CreateImageStream(ctx, &cluster.ImageStream{
		Metadata: cluster.ObjectMeta{Namespace: "team-a", Name: "app"},
		Spec:     cluster.ImageStreamSpec{Tags: []cluster.TagReference{{Name: "latest"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Metadata.UID == "" || created.Metadata.ResourceVersion == "" {
		t.Fatalf("created stream lacks uid or resourceVersion: %+v", created.Metadata)
	}
	list, err := c.ListImageStreams(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Metadata.Name != "app" {
		t.Fatalf("list of all namespaces: %+v", list.Items)
	}

	w, err := c.WatchImageStreams(ctx, "team-a", list.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// The registry's push: the status is written through /status only.
	if _, err := c.SetImageStreamStatus(ctx, "team-a", "app", status("latest", digestA)); err != nil {
		t.Fatal(err)
	}
	got := next(t, w, "MODIFIED")
	if currentImage(got) != digestA || got.Status.DockerImageRepository == "" {
		t.Fatalf("watched status: %+v", got.Status)
	}
	// A write of the main resource cannot change the status.
	got.Spec.Tags = append(got.Spec.Tags, cluster.TagReference{Name: "v2"})
	got.Status = status("latest", digestB)
	updated, err := c.UpdateImageStream(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	if currentImage(updated) != digestA || len(updated.Spec.Tags) != 2 {
		t.Fatalf("after a spec update: spec %+v, status %+v", updated.Spec, updated.Status)
	}
	next(t, w, "MODIFIED")
	stale := *updated
	stale.Metadata.ResourceVersion = created.Metadata.ResourceVersion
	if _, err := c.UpdateImageStreamStatus(ctx, &stale); cluster.StatusCode(err) != http.StatusConflict {
		t.Fatalf("status write with a stale resourceVersion: got %v, want 409", err)
	}
	lastSeen := updated.Metadata.ResourceVersion

	// Kill the API server: the watch ends; nothing is lost, the data is in
	// etcd, and a watch from the last resourceVersion goes on.
	pid := c.APIServerPid()
	restart := time.Now()
	if err := c.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server restarted in %v", time.Since(restart).Round(time.Millisecond))
	if c.APIServerPid() == pid || c.APIServerPid() == 0 {
		t.Fatalf("API server pid %d after restart, was %d", c.APIServerPid(), pid)
	}
	if _, err := w.Next(); err == nil {
		t.Fatal("the watch survived the API server's death")
	}
	w, err = c.WatchImageStreams(ctx, "team-a", lastSeen)
	if err != nil {
		t.Fatalf("watch from %s after a restart: %v", lastSeen, err)
	}
	defer w.Close()
	if _, err := c.SetImageStreamStatus(ctx, "team-a", "app", status("latest", digestB)); err != nil {
		t.Fatal(err)
	}
	if got := next(t, w, "MODIFIED"); currentImage(got) != digestB {
		t.Fatalf("after restart, watched %s, want %s", currentImage(got), digestB)
	}
	w.Close()

	// A change the client misses, then a forced relist: its watch from the
	// last resourceVersion it saw is refused with 410 Gone, and a new list
	// has the change.
	before, err := c.GetImageStream(ctx, "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetImageStreamStatus(ctx, "team-a", "app", status("latest", digestA)); err != nil {
		t.Fatal(err)
	}
	relist := time.Now()
	if err := c.ForceRelist(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("compaction and API server restart in %v", time.Since(relist).Round(time.Millisecond))
	if err := watchGone(ctx, c, before.Metadata.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	list, err = c.ListImageStreams(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || currentImage(&list.Items[0]) != digestA {
		t.Fatalf("relist: %+v", list.Items)
	}
	w, err = c.WatchImageStreams(ctx, "team-a", list.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := c.DeleteImageStream(ctx, "team-a", "app"); err != nil {
		t.Fatal(err)
	}
	if gone := next(t, w, "DELETED"); gone.Metadata.Name != "app" {
		t.Fatalf("deleted %+v", gone.Metadata)
	}
	if _, err := c.GetImageStream(ctx, "team-a", "app"); cluster.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

// watchGone checks that a watch from resourceVersion is refused with 410,
// whichever way the server says it: before the stream starts, or as its
// first event.
func watchGone(ctx context.Context, c *cluster.Cluster, resourceVersion string) error {
	w, err := c.WatchImageStreams(ctx, "team-a", resourceVersion)
	if cluster.StatusCode(err) == http.StatusGone {
		return nil
	}
	if err != nil {
		return err
	}
	defer w.Close()
	ev, err := w.Next()
	if err != nil {
		return err
	}
	if cluster.StatusCode(ev.Err()) != http.StatusGone {
		return errors.New("watch from " + resourceVersion + " after compaction: got a " + ev.Type + " event, want 410 Gone")
	}
	return nil
}

// Without the watch cache, etcd answers watches itself, so a compaction
// alone makes an old resourceVersion 410 Gone, with no restart.
func TestCompactionWithoutWatchCache(t *testing.T) {
	c := cluster.Start(t, cluster.WithAPIServerArgs("--watch-cache=false"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	is, err := c.CreateImageStream(ctx, &cluster.ImageStream{Metadata: cluster.ObjectMeta{Namespace: "team-a", Name: "app"}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.WatchImageStreams(ctx, "team-a", is.Metadata.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := c.CompactEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := watchGone(ctx, c, is.Metadata.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	// A watch opened before the compaction either goes on or, if etcd was
	// still bringing it up to date when the compaction came, ends with 410:
	// both tell a client the truth, and which one it gets is a race inside
	// etcd.
	if _, err := c.SetImageStreamStatus(ctx, "team-a", "app", status("latest", digestA)); err != nil {
		t.Fatal(err)
	}
	ev, err := w.Next()
	if err != nil {
		t.Fatal(err)
	}
	switch ev.Type {
	case "MODIFIED":
		if got, err := ev.ImageStream(); err != nil || currentImage(got) != digestA {
			t.Fatalf("open watch after compaction: %+v, %v", got, err)
		}
	case "ERROR":
		if cluster.StatusCode(ev.Err()) != http.StatusGone {
			t.Fatalf("open watch after compaction: %v, want 410", ev.Err())
		}
	default:
		t.Fatalf("open watch after compaction: %s event", ev.Type)
	}
}
