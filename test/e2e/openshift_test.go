package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/cluster"
	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/registry"
	"github.com/explodefs/explodefs/test/treecmp"
	"github.com/explodefs/explodefs/test/umoci"
)

// osEnv is a daemon following ImageStreams of a real API server, with
// blobs in a real registry's storage.
type osEnv struct {
	dir, mnt string
	c        *cluster.Cluster
	reg      *registry.Registry
	d        *daemon
	layouts  string
}

// TestOpenShift runs the daemon with --source openshift against a real
// apiextensions-apiserver serving ImageStreams and Debian's
// docker-registry, configured only through os-explode's variables.
func TestOpenShift(t *testing.T) {
	e, bin := newOSEnv(t)
	dir := e.dir

	e.d = newDaemon(t, bin, "", e.mnt, filepath.Join(dir, "state"))
	host, port, err := net.SplitHostPort(e.reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	e.d.args = []string{"serve", "--source", "openshift", "--mountpoint", e.mnt,
		"--state-dir", filepath.Join(dir, "state"), "--listen", e.d.listen, "--retry-backoff", "500ms"}
	e.d.env = []string{
		"KUBECONFIG=" + e.c.Kubeconfig,
		"OS_WATCH_NAMESPACE=team",
		"OS_IMAGE_BLOB_SOURCE=file://" + e.reg.RootDir,
		"DOCKER_REGISTRY_SERVICE_HOST=" + host,
		"DOCKER_REGISTRY_SERVICE_PORT=" + port,
	}
	e.d.start()

	t.Run("PushedImageAppearsAndMatchesUmoci", e.testPushedImage)
	t.Run("TagMoveKeepsHeldFile", e.testTagMove)
	t.Run("OtherNamespaceIgnored", e.testOtherNamespace)
	t.Run("ExternalImageSkipped", e.testExternalSkipped)
	t.Run("APIServerRestartAndRelistLoseNothing", e.testAPIServerRestart)
	t.Run("DeleteTagThenStream", e.testDeletes)
	t.Run("RestartReindexesNothing", e.testRestart)
}

// newOSEnv starts a real API server and registry (with opts) for a test
// and builds the daemon.
func newOSEnv(t *testing.T, opts ...registry.Option) (*osEnv, string) {
	t.Helper()
	requireHost(t)
	dir := t.TempDir()
	// t.TempDir makes 0700 directories; non-root readers must reach the mount.
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &osEnv{dir: dir, mnt: filepath.Join(dir, "mnt"), layouts: filepath.Join(dir, "layouts")}
	e.c = cluster.Start(t)
	e.reg = registry.Start(t, opts...)
	return e, buildDaemon(t, dir)
}

// push writes img as a layout, pushes it to the registry as ns/stream:tag
// and returns its digest.
func (e *osEnv) push(t *testing.T, ns, stream, tag string, img imagegen.Image) (digest.Digest, string) {
	t.Helper()
	layout := filepath.Join(e.layouts, ns, stream, tag)
	if _, err := imagegen.WriteImage(layout, tag, img); err != nil {
		t.Fatal(err)
	}
	d, err := e.reg.PushLayout(context.Background(), layout, tag, ns+"/"+stream)
	if err != nil {
		t.Fatal(err)
	}
	return d, layout
}

func (e *osEnv) ref(ns, stream string, d digest.Digest) string {
	return e.reg.Host + "/" + ns + "/" + stream + "@" + d.String()
}

// setTags writes the stream's status as OpenShift's registry would: each
// tag's history, newest first. The stream is created when missing.
func (e *osEnv) setTags(t *testing.T, ns, stream string, tags map[string][]string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.c.GetImageStream(ctx, ns, stream); cluster.StatusCode(err) == 404 {
		if _, err := e.c.CreateImageStream(ctx, &cluster.ImageStream{Metadata: cluster.ObjectMeta{Namespace: ns, Name: stream}}); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	st := cluster.ImageStreamStatus{DockerImageRepository: e.reg.Host + "/" + ns + "/" + stream}
	for tag, refs := range tags {
		list := cluster.NamedTagEventList{Tag: tag}
		for _, ref := range refs {
			_, d, _ := strings.Cut(ref, "@")
			list.Items = append(list.Items, cluster.TagEvent{Created: time.Now(), DockerImageReference: ref, Image: d})
		}
		st.Tags = append(st.Tags, list)
	}
	if _, err := e.c.SetImageStreamStatus(ctx, ns, stream, st); err != nil {
		t.Fatal(err)
	}
}

func (e *osEnv) tagPath(ns, stream, tag string) string { return filepath.Join(e.mnt, ns, stream, tag) }

func (e *osEnv) waitTag(t *testing.T, ns, stream, tag string, d digest.Digest) {
	t.Helper()
	eventually(t, 5*time.Minute, ns+"/"+stream+":"+tag+" naming "+d.String(), func() bool {
		target, err := os.Readlink(e.tagPath(ns, stream, tag))
		return err == nil && target == "@"+d.String()
	})
}

func (e *osEnv) testPushedImage(t *testing.T) {
	img := imagegen.FeatureImage(imagegen.FeatureOptions{BigFileSize: 8 << 20})
	d, layout := e.push(t, "team", "features", "latest", img)
	e.setTags(t, "team", "features", map[string][]string{"latest": {e.ref("team", "features", d)}})
	e.waitTag(t, "team", "features", "latest", d)

	rootfs, err := umoci.Unpack(context.Background(), layout, "latest", filepath.Join(e.dir, "umoci-features"))
	if err != nil {
		t.Fatal(err)
	}
	facts := imagegen.Features()
	diffs, err := treecmp.Compare(rootfs, e.tagPath("team", "features", "latest")+"/",
		treecmp.Options{LooseMetadata: append([]string{"."}, facts.ImplicitDirs...)})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("%d differences from umoci unpack:\n%s", len(diffs), treecmp.Report(diffs, 40))
	}
}

func fileImage(name, content string) imagegen.Image {
	return imagegen.SingleImage(fileLayer(name, content))
}

func (e *osEnv) testTagMove(t *testing.T) {
	first, _ := e.push(t, "team", "app", "v1", fileImage("file", "first image\n"))
	e.setTags(t, "team", "app", map[string][]string{"latest": {e.ref("team", "app", first)}})
	e.waitTag(t, "team", "app", "latest", first)
	held, err := os.Open(filepath.Join(e.tagPath("team", "app", "latest"), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	second, _ := e.push(t, "team", "app", "v2", fileImage("file", "second image\n"))
	e.setTags(t, "team", "app", map[string][]string{"latest": {e.ref("team", "app", second), e.ref("team", "app", first)}})
	e.waitTag(t, "team", "app", "latest", second)
	if got, err := os.ReadFile(filepath.Join(e.tagPath("team", "app", "latest"), "file")); err != nil || string(got) != "second image\n" {
		t.Errorf("through the moved tag: %q, %v", got, err)
	}
	if got, err := io.ReadAll(held); err != nil || string(got) != "first image\n" {
		t.Errorf("file held through the old image: %q, %v", got, err)
	}
	// The old image stays as history.
	if _, err := os.Stat(filepath.Join(e.mnt, "team", "app", "@"+first.String(), "file")); err != nil {
		t.Errorf("history image: %v", err)
	}
}

func (e *osEnv) testOtherNamespace(t *testing.T) {
	d, _ := e.push(t, "elsewhere", "app", "latest", fileImage("file", "not watched\n"))
	e.setTags(t, "elsewhere", "app", map[string][]string{"latest": {e.ref("elsewhere", "app", d)}})
	// A stream of the watched namespace written after it shows up; the
	// other namespace's, written first, never does.
	marker, _ := e.push(t, "team", "marker", "latest", fileImage("file", "watched\n"))
	e.setTags(t, "team", "marker", map[string][]string{"latest": {e.ref("team", "marker", marker)}})
	e.waitTag(t, "team", "marker", "latest", marker)
	if _, err := os.Lstat(filepath.Join(e.mnt, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a namespace OS_WATCH_NAMESPACE excludes is shown: %v", err)
	}
}

func (e *osEnv) testExternalSkipped(t *testing.T) {
	internal, _ := e.push(t, "team", "mixed", "latest", fileImage("file", "internal\n"))
	external := digest.FromString("an image in another registry")
	e.setTags(t, "team", "mixed", map[string][]string{
		"internal": {e.ref("team", "mixed", internal)},
		"external": {"quay.io/org/thing@" + external.String()},
	})
	e.waitTag(t, "team", "mixed", "internal", internal)
	var img status.Image
	eventually(t, 30*time.Second, "the external image in the status", func() bool {
		for _, i := range e.d.status().Images {
			if i.Digest == external {
				img = i
				return true
			}
		}
		return false
	})
	if img.State != status.Skipped || !strings.Contains(img.Reason, "quay.io") {
		t.Errorf("external image: %s %q; want skipped naming its registry", img.State, img.Reason)
	}
	if _, err := os.Lstat(e.tagPath("team", "mixed", "external")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the external tag is shown: %v", err)
	}
}

func (e *osEnv) testAPIServerRestart(t *testing.T) {
	d1, _ := e.push(t, "team", "restart", "v1", fileImage("file", "before the restart\n"))
	d2, _ := e.push(t, "team", "restart", "v2", fileImage("file", "after the restart\n"))
	e.setTags(t, "team", "restart", map[string][]string{"latest": {e.ref("team", "restart", d1)}})
	e.waitTag(t, "team", "restart", "latest", d1)

	e.c.StopAPIServer()
	time.Sleep(2 * time.Second) // the daemon's watch breaks and retries
	if err := e.c.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	e.setTags(t, "team", "restart", map[string][]string{"latest": {e.ref("team", "restart", d2), e.ref("team", "restart", d1)}})
	e.waitTag(t, "team", "restart", "latest", d2)

	// A compacted history forces the informer to relist (410 Gone); the
	// update made around it must still arrive.
	d3, _ := e.push(t, "team", "restart", "v3", fileImage("file", "after the relist\n"))
	if err := e.c.ForceRelist(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.setTags(t, "team", "restart", map[string][]string{"latest": {e.ref("team", "restart", d3), e.ref("team", "restart", d2)}})
	e.waitTag(t, "team", "restart", "latest", d3)
}

func (e *osEnv) testDeletes(t *testing.T) {
	base := fileLayer("base", "shared by two streams\n")
	a, _ := e.push(t, "team", "left", "latest", imagegen.SingleImage(base, fileLayer("a", "a\n")))
	b, _ := e.push(t, "team", "right", "latest", imagegen.SingleImage(base, fileLayer("b", "b\n")))
	e.setTags(t, "team", "left", map[string][]string{"latest": {e.ref("team", "left", a)}, "keep": {e.ref("team", "left", a)}})
	e.setTags(t, "team", "right", map[string][]string{"latest": {e.ref("team", "right", b)}})
	e.waitTag(t, "team", "left", "latest", a)
	e.waitTag(t, "team", "right", "latest", b)

	e.setTags(t, "team", "left", map[string][]string{"keep": {e.ref("team", "left", a)}})
	eventually(t, 30*time.Second, "the deleted tag goes", func() bool {
		_, err := os.Lstat(e.tagPath("team", "left", "latest"))
		return errors.Is(err, fs.ErrNotExist)
	})
	if err := e.c.DeleteImageStream(context.Background(), "team", "left"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the deleted stream goes", func() bool {
		_, err := os.Lstat(filepath.Join(e.mnt, "team", "left"))
		return errors.Is(err, fs.ErrNotExist)
	})
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	if got, err := os.ReadFile(filepath.Join(e.tagPath("team", "right", "latest"), "base")); err != nil || string(got) != "shared by two streams\n" {
		t.Errorf("a layer another stream still uses: %q, %v", got, err)
	}
}

func (e *osEnv) testRestart(t *testing.T) {
	e.d.stop(syscall.SIGTERM)
	logBefore, _ := os.ReadFile(e.d.log)
	e.d.start()
	for _, s := range []string{"features", "app", "marker", "restart", "right"} {
		eventually(t, time.Minute, "team/"+s+" back after the restart", func() bool {
			_, err := os.Readlink(e.tagPath("team", s, "latest"))
			return err == nil
		})
	}
	logAll, _ := os.ReadFile(e.d.log)
	if after := logAll[len(logBefore):]; bytes.Contains(after, []byte(`msg="layer indexed"`)) {
		t.Errorf("restart re-indexed layers:\n%s", after)
	}
}
