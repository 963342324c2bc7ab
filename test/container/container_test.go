package container

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/explodefs/explodefs/test/cluster/harness"
	"github.com/explodefs/explodefs/test/imagegen"
)

const (
	image    = "localhost/explodefs:dev"
	runcPath = "/usr/sbin/runc"
	// Where the container mounts the tree; the host sees it at its own
	// directory through rshared propagation.
	containerMount = "/mnt/explodefs"
)

// podmanArgs are the global flags this machine needs: crun, podman's
// default runtime, does not start here.
var podmanArgs = []string{"--runtime", runcPath}

func podman(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	return mustRun(t, timeout, "/", nil, "podman", append(podmanArgs, args...)...)
}

func TestContainerImage(t *testing.T) {
	requireHost(t)
	root := repoRoot(t)
	dir := t.TempDir()

	start := time.Now()
	mustRun(t, 20*time.Minute, root, nil, "hack/base-image.sh")
	t.Logf("hack/base-image.sh: %v", time.Since(start).Round(time.Second))
	start = time.Now()
	mustRun(t, 30*time.Minute, root, []string{"IMAGE=" + image}, "hack/container-image.sh")
	t.Logf("hack/container-image.sh: %v", time.Since(start).Round(time.Second))
	checkImageConfig(t)

	images := filepath.Join(dir, "images")
	state := filepath.Join(dir, "state")
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{state, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// As `make run` does: DIR/demo/hello is an OCI layout tagged latest.
	mustRun(t, 10*time.Minute, root, nil, goTool(), "run", "./test/imagegen/cmd/imagegen", "demo", images)
	sharedBindMount(t, mnt)

	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	name := fmt.Sprintf("explodefs-test-%d", os.Getpid())
	// Cleanups run last first: the logs are printed before the container
	// is removed, and the container is gone before the bind mount is.
	t.Cleanup(func() {
		if out, err := command(2*time.Minute, "/", nil, "podman", append(podmanArgs, "rm", "-f", "-t", "10", name)...); err != nil {
			t.Errorf("cleanup: %v\n%s", err, out)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := command(time.Minute, "/", nil, "podman", "logs", name)
			t.Logf("podman logs %s:\n%s", name, tail(out, 200))
		}
	})
	start = time.Now()
	podman(t, 2*time.Minute, "run", "-d", "--name", name,
		"--privileged", "--device", "/dev/fuse",
		// The listener on a free port of the host's loopback, so that
		// runs do not clash with each other or with `make run`.
		"--network", "host", "-e", "EXPLODEFS_LISTEN="+listen,
		// Without systemd podman has no timer for the health check;
		// the test runs it with podman healthcheck run.
		"--health-interval", "disable",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"-v", state+":/var/lib/explodefs",
		"-v", images+":/images:ro",
		"-v", mnt+":"+containerMount+":rshared",
		image,
		"serve", "--source=oci-dir:/images", "--mountpoint="+containerMount,
		"--state-dir=/var/lib/explodefs/state", "--shutdown-timeout=5s")

	checkTreeOnHost(t, name, mnt)
	t.Logf("the demo image was readable on the host %v after podman run", time.Since(start).Round(time.Millisecond))
	checkHealth(t, name, listen)
	checkStop(t, name, mnt)
}

// checkImageConfig checks what the Dockerfile promises a runtime: the
// binary as entrypoint, a serve command by default and a health check.
func checkImageConfig(t *testing.T) {
	t.Helper()
	out := podman(t, time.Minute, "image", "inspect", "--format",
		"{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .HealthCheck}}", image)
	for _, want := range []string{`["/usr/local/bin/explodefs"]`, `["serve",`, `/healthz`} {
		if !strings.Contains(out, want) {
			t.Errorf("image %s: config %s lacks %s", image, strings.TrimSpace(out), want)
		}
	}
	size := podman(t, time.Minute, "image", "inspect", "--format", "{{.Size}}", image)
	if n, err := strconv.ParseInt(strings.TrimSpace(size), 10, 64); err == nil {
		t.Logf("image %s: %d MB", image, n/1e6)
	}
}

// checkTreeOnHost waits until the host sees the demo image in the
// container's FUSE mount and reads it back.
func checkTreeOnHost(t *testing.T, name, mnt string) {
	t.Helper()
	want := demoFiles(t)
	stream := filepath.Join(mnt, "demo", "hello")
	readme := filepath.Join(stream, "latest", "README")
	waitFor(t, 3*time.Minute, "the host to see "+readme, func() (bool, error) {
		if _, err := os.Stat(readme); err != nil {
			if running := containerRunning(t, name); !running {
				t.Fatalf("container %s stopped before %s appeared", name, readme)
			}
			return false, err
		}
		return true, nil
	})
	m, ok, err := fuseMountAt(mnt)
	if err != nil || !ok {
		t.Fatalf("the host reads %s but /proc/self/mountinfo has no FUSE mount at %s (err %v)", readme, mnt, err)
	}
	t.Logf("host mountinfo: %s %s at %s", m.FSType, m.Source, m.Point)

	for path, content := range want {
		got, err := os.ReadFile(filepath.Join(stream, "latest", path))
		if err != nil {
			t.Fatalf("reading %s from the host: %v", path, err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s read through the container's mount: %d bytes %.60q, want %d bytes %.60q",
				path, len(got), got, len(content), content)
		}
	}
	target, err := os.Readlink(filepath.Join(stream, "latest"))
	if err != nil || !strings.HasPrefix(target, "@sha256:") {
		t.Errorf("tag latest: readlink = %q, %v; want a link to @sha256:<hex>", target, err)
	}
}

// demoFiles are regular files of the demo image that the generator
// writes, with their content: the README and a 64 KiB text.
func demoFiles(t *testing.T) map[string][]byte {
	t.Helper()
	want := map[string][]byte{"README": nil, "usr/share/doc/demo/words.txt": nil}
	for _, m := range imagegen.DemoImage().Manifests {
		for _, l := range m.Layers {
			for e := range l.Entries {
				if _, ok := want[e.Header.Name]; !ok || e.Content == nil {
					continue
				}
				b, err := imagegen.ReadAll(e.Content)
				if err != nil {
					t.Fatal(err)
				}
				want[e.Header.Name] = b
			}
		}
	}
	for path, b := range want {
		if len(b) == 0 {
			t.Fatalf("the demo image has no file %s any more; update this test", path)
		}
	}
	return want
}

func containerRunning(t *testing.T, name string) bool {
	t.Helper()
	return strings.TrimSpace(podman(t, time.Minute, "inspect", "--format", "{{.State.Running}}", name)) == "true"
}

// checkHealth runs the image's own HEALTHCHECK in the container, and the
// probes from the host.
func checkHealth(t *testing.T, name, listen string) {
	t.Helper()
	waitFor(t, time.Minute, "the image's health check to pass", func() (bool, error) {
		out, err := command(time.Minute, "/", nil, "podman", append(podmanArgs, "healthcheck", "run", name)...)
		if err != nil {
			return false, fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
		}
		return true, nil
	})
	state := podman(t, time.Minute, "inspect", "--format", "{{.State.Health.Status}}", name)
	if got := strings.TrimSpace(state); got != "healthy" {
		t.Errorf("after podman healthcheck run, health = %q, want healthy", got)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		url := "http://" + listen + path
		waitFor(t, time.Minute, "GET "+url+" to answer 200", func() (bool, error) {
			resp, err := client.Get(url)
			if err != nil {
				return false, err
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
			}
			return true, nil
		})
	}
}

// checkStop stops the container as a pod's termination does (SIGTERM) and
// checks that the daemon unmounted the tree, which the host must see too,
// and exited by itself rather than being killed.
func checkStop(t *testing.T, name, mnt string) {
	t.Helper()
	start := time.Now()
	podman(t, 2*time.Minute, "stop", "-t", "30", name)
	t.Logf("podman stop: %v", time.Since(start).Round(time.Millisecond))
	code := strings.TrimSpace(podman(t, time.Minute, "inspect", "--format", "{{.State.ExitCode}}", name))
	if code != "0" {
		t.Errorf("after SIGTERM the daemon exited with %s, want 0 (137 means it was killed)", code)
	}
	waitFor(t, 10*time.Second, "the host to lose the FUSE mount at "+mnt, func() (bool, error) {
		m, ok, err := fuseMountAt(mnt)
		if err != nil {
			return false, err
		}
		if ok {
			return false, fmt.Errorf("still mounted: %s %s", m.FSType, m.Source)
		}
		return true, nil
	})
	if entries, err := os.ReadDir(mnt); err != nil || len(entries) != 0 {
		t.Errorf("after stop, %s reads as %d entries, %v; want the empty directory under the mount", mnt, len(entries), err)
	}
}
