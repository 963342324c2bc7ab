package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/ostree"
	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/treecmp"
	"github.com/explodefs/explodefs/test/umoci"
)

// requireOSTreeTools fails in CI, or skips elsewhere, without the ostree
// CLI and runc.
func requireOSTreeTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"ostree", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "OSTree end-to-end test needs " + strings.Join(missing, ", ") + " (apt-get install ostree runc, or hack/install-deps.sh)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

type ostreeEnv struct {
	dir, src, mnt, state, repo string
	d                          *daemon
	features                   []imagegen.Variant
}

func (e *ostreeEnv) tag(stream string) string { return filepath.Join(e.mnt, "ot", stream, "latest") }

// TestOSTree materializes the core's test images and checks the commits
// against umoci, runc on both the checkout and the mount, passthrough,
// GC, and a kill during materialization.
func TestOSTree(t *testing.T) {
	requireHost(t)
	requireOSTreeTools(t)
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &ostreeEnv{dir: dir, src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"), state: filepath.Join(dir, "state")}
	e.repo = filepath.Join(e.state, "ostree")
	bin := buildDaemon(t, dir)
	e.features = imagegen.FeatureVariants(imagegen.FeatureOptions{})
	var refs []string
	for _, v := range e.features {
		write(t, filepath.Join(e.src, "ot", v.Name), v.Image)
		refs = append(refs, "ot/"+v.Name+":latest")
	}
	write(t, filepath.Join(e.src, "ot", "runnable"), runnableImage(t, dir))
	refs = append(refs, "ot/runnable:latest")

	e.d = newDaemon(t, bin, e.src, e.mnt, e.state)
	// No grace period, so that a collection takes an unreferenced layer
	// at once.
	e.d.args = append(e.d.args, "--allow-suid", "--gc-grace", "0s")
	e.d.start()
	e.d.settle(refs, 10*time.Minute)
	e.waitMaterialized(t, refs, 10*time.Minute)

	t.Run("CheckoutMatchesUmoci", e.testCheckoutMatchesUmoci)
	t.Run("Passthrough", e.testPassthrough)
	t.Run("Runc", e.testRunc)
	t.Run("LastTagDeletedPrunes", e.testLastTagDeletedPrunes)
	t.Run("KillDuringMaterialization", e.testKillDuringMaterialization)
	e.ostree(t, "fsck")
}

// runnableImage holds a static program and the directories runc mounts
// over, so that it runs from a read-only root.
func runnableImage(t *testing.T, dir string) imagegen.Image {
	t.Helper()
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/explodefs/explodefs/test/e2e/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building hello: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return imagegen.SingleImage(imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.Dir("proc", 0o755), imagegen.Dir("sys", 0o755), imagegen.Dir("dev", 0o755),
		imagegen.Dir("etc", 0o755), imagegen.File("etc/message", 0o644, imagegen.String("from the image")),
		imagegen.File("hello", 0o755, imagegen.Bytes(prog)),
	)})
}

func (e *ostreeEnv) ostree(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("ostree", append([]string{"--repo=" + e.repo}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ostree %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// waitMaterialized waits until every ref's image is committed.
func (e *ostreeEnv) waitMaterialized(t *testing.T, refs []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var waiting []string
		for _, ref := range refs {
			img, ok := e.d.image(ref)
			switch {
			case !ok || img.Materialized == nil:
				waiting = append(waiting, ref+" (not yet)")
			case img.Materialized.State == "failed":
				t.Fatalf("materializing %s failed: %s", ref, img.Materialized.Reason)
			case img.Materialized.State != "done":
				waiting = append(waiting, ref+" ("+img.Materialized.State+")")
			}
		}
		if len(waiting) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not materialized after %v: %s", timeout, strings.Join(waiting, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testCheckoutMatchesUmoci checks out every variant's tag ref and compares
// it with umoci's extraction, entry by entry. The differences OSTree
// cannot avoid are forgiven and nothing else: mtimes, hard-link groups
// (a checkout links equal content), and device nodes and fifos, which
// must instead be listed in the commit metadata.
func (e *ostreeEnv) testCheckoutMatchesUmoci(t *testing.T) {
	rootfs, err := umoci.Unpack(context.Background(), filepath.Join(e.src, "ot", "features-gzip"), "latest", filepath.Join(e.dir, "umoci-bundle"))
	if err != nil {
		t.Fatal(err)
	}
	facts := imagegen.Features()
	opts := treecmp.Options{LooseMetadata: append([]string{"."}, facts.ImplicitDirs...), IgnoreMtime: true, IgnoreLinks: true}
	for _, v := range e.features {
		t.Run(v.Name, func(t *testing.T) {
			co := filepath.Join(e.dir, "co-"+v.Name)
			ref := ostree.TagRef("ot", v.Name, "latest")
			e.ostree(t, "checkout", "--require-hardlinks", ref, co)
			diffs, err := treecmp.Compare(rootfs, co, opts)
			if err != nil {
				t.Fatal(err)
			}
			var special []string
			diffs = slices.DeleteFunc(diffs, func(d treecmp.Difference) bool {
				if d.Kind == treecmp.Missing && (strings.HasSuffix(d.Want, "device") || d.Want == "fifo") {
					special = append(special, "/"+d.Path)
					return true
				}
				return false
			})
			if len(diffs) > 0 {
				t.Errorf("%d differences from umoci unpack:\n%s", len(diffs), treecmp.Report(diffs, 40))
			}
			if len(special) == 0 {
				t.Fatal("the feature image has device nodes; the checkout should lack them")
			}
			commit := strings.TrimSpace(e.ostree(t, "rev-parse", ref))
			listed := strings.TrimSpace(e.ostree(t, "show", "--print-metadata-key="+ostree.MetaSkipped, commit))
			for _, p := range special {
				if !strings.Contains(listed, "'"+p+"'") {
					t.Errorf("skipped %s is not listed in the commit metadata %s", p, listed)
				}
			}
			img, _ := e.d.image("ot/" + v.Name + ":latest")
			for key, want := range map[string]string{
				ostree.MetaManifest: img.Manifest.String(),
				ostree.MetaConfig:   img.Config.String(),
				ostree.MetaTags:     "ot/" + v.Name + ":latest",
			} {
				got := e.ostree(t, "show", "--print-metadata-key="+key, commit)
				if !strings.Contains(got, want) {
					t.Errorf("metadata %s = %s, want %s", key, got, want)
				}
			}
		})
	}
}

// testPassthrough reads every file of a committed image through the mount
// and checks the daemon answered no READ for them.
func (e *ostreeEnv) testPassthrough(t *testing.T) {
	before := e.d.status().Mount
	if before == nil || !before.Passthrough {
		t.Fatalf("mount status %+v: passthrough is not in use", before)
	}
	root := e.tag("features-tar") + "/"
	co := filepath.Join(e.dir, "co-features-tar")
	files := 0
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		got, err := fileSum(p)
		if err != nil {
			return err
		}
		want, err := fileSum(filepath.Join(co, strings.TrimPrefix(p, root)))
		if err != nil {
			return err
		}
		if got != want {
			t.Errorf("%s differs from the checkout", p)
		}
		// An empty file has no object in the index to pass through to,
		// and no bytes to read.
		if fi, err := de.Info(); err == nil && fi.Size() > 0 {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after := e.d.status().Mount
	if after.Reads != before.Reads {
		t.Errorf("the daemon answered %d READs for a committed image", after.Reads-before.Reads)
	}
	if after.PassthroughOpens-before.PassthroughOpens < uint64(files) {
		t.Errorf("%d passthrough opens for %d files", after.PassthroughOpens-before.PassthroughOpens, files)
	}
	if files < 10 {
		t.Fatalf("only %d files read", files)
	}
}

func fileSum(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// testRunc runs the image's program with runc, once from a checkout made
// by `explodefs checkout` and once from the FUSE mount.
func (e *ostreeEnv) testRunc(t *testing.T) {
	co := filepath.Join(e.dir, "co-runnable")
	out, err := exec.Command(e.d.bin, "checkout", "--state-dir", e.state, "ot/runnable/latest", co).CombinedOutput()
	if err != nil {
		t.Fatalf("explodefs checkout: %v\n%s", err, out)
	}
	mountRoot, err := filepath.EvalSymlinks(e.tag("runnable"))
	if err != nil {
		t.Fatal(err)
	}
	for name, rootfs := range map[string]string{"checkout": co, "mount": mountRoot} {
		t.Run(name, func(t *testing.T) {
			got := runcRun(t, filepath.Join(e.dir, "bundle-"+name), rootfs, "runc-"+name)
			if want := "hello " + name + ": from the image\n"; got != want {
				t.Errorf("runc printed %q, want %q", got, want)
			}
		})
	}
}

// runcRun runs /hello NAME in a container on rootfs (read-only) and
// returns its output.
func runcRun(t *testing.T, bundle, rootfs, id string) string {
	t.Helper()
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := exec.Command("runc", "spec")
	spec.Dir = bundle
	if out, err := spec.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var config map[string]any
	if err := json.Unmarshal(raw, &config); err != nil {
		t.Fatal(err)
	}
	config["root"] = map[string]any{"path": rootfs, "readonly": true}
	process := config["process"].(map[string]any)
	process["terminal"] = false
	process["args"] = []string{"/hello", strings.TrimPrefix(id, "runc-")}
	if raw, err = json.Marshal(config); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command("runc", "--root", filepath.Join(bundle, "state"), "run", "--bundle", bundle, id)
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil {
		t.Fatalf("runc run on %s: %v\n%s", rootfs, err, stderr.String())
	}
	return stdout.String()
}

// testLastTagDeletedPrunes deletes the last tag of one image: its refs go
// and GC, after a dry run that deletes nothing, prunes the objects only it
// held and deletes the index of its layer, while every other image keeps
// all of its objects (fsck stays clean).
func (e *ostreeEnv) testLastTagDeletedPrunes(t *testing.T) {
	img, _ := e.d.image("ot/runnable:latest")
	imageRef := ostree.ImageRef(img.Digest)
	layer := img.Layers[0].String()
	helloObject := objectOf(t, e, imageRef, "/hello")
	if _, err := os.Stat(helloObject); err != nil {
		t.Fatalf("object of /hello: %v", err)
	}
	if err := imagegen.RemoveTag(filepath.Join(e.src, "ot", "runnable"), "latest"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the refs of the untagged image are deleted", func() bool {
		refs := e.ostree(t, "refs")
		return !strings.Contains(refs, imageRef) && !strings.Contains(refs, ostree.TagRef("ot", "runnable", "latest"))
	})
	indexed := func() bool {
		for _, l := range e.d.status().Layers {
			if l.Digest.String() == layer {
				return true
			}
		}
		return false
	}
	out, err := exec.Command(e.d.bin, "gc", "--dry-run", "--listen", e.d.listen).CombinedOutput()
	if err != nil {
		t.Fatalf("explodefs gc --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"would prune", "would delete 1 ", layer} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explodefs gc --dry-run said %q; want %q in it", out, want)
		}
	}
	if _, err := os.Stat(helloObject); err != nil || !indexed() {
		t.Fatalf("a dry run deleted something: object %v, layer still indexed %v", err, indexed())
	}
	out, err = exec.Command(e.d.bin, "gc", "--listen", e.d.listen).CombinedOutput()
	if err != nil {
		t.Fatalf("explodefs gc: %v\n%s", err, out)
	}
	for _, want := range []string{"pruned", "deleted 1 ", layer} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explodefs gc said %q; want %q in it", out, want)
		}
	}
	if indexed() {
		t.Errorf("layer %s of the removed image is still indexed", layer)
	}
	if _, err := os.Stat(helloObject); !os.IsNotExist(err) {
		t.Errorf("object only the removed image held: %v, want it pruned", err)
	}
	e.ostree(t, "fsck")
	for _, v := range e.features {
		ref := ostree.TagRef("ot", v.Name, "latest")
		if !strings.Contains(e.ostree(t, "refs"), ref) {
			t.Errorf("ref %s lost", ref)
		}
	}
}

func objectOf(t *testing.T, e *ostreeEnv, ref, p string) string {
	t.Helper()
	fields := strings.Fields(e.ostree(t, "ls", "-C", ref, p))
	if len(fields) < 5 || len(fields[4]) != 64 {
		t.Fatalf("ostree ls -C %s %s: %q", ref, p, fields)
	}
	sum := fields[4]
	return filepath.Join(e.repo, "objects", sum[:2], sum[2:]+".file")
}

// testKillDuringMaterialization kills the daemon while it commits a large
// image, restarts it, and expects every image committed and no ref that
// points at a missing or partial commit.
func (e *ostreeEnv) testKillDuringMaterialization(t *testing.T) {
	img := imagegen.ManyFilesImage(40, 500)
	img.Manifests[0].Layers = append(img.Manifests[0].Layers, imagegen.Layer{Compression: imagegen.Gzip,
		Entries: imagegen.Entries(imagegen.File("big", 0o644, imagegen.Binary(7, 200<<20, 30)))})
	write(t, filepath.Join(e.src, "ot", "large"), img)
	ref := "ot/large:latest"
	e.d.settle([]string{ref}, 5*time.Minute)
	eventually(t, 5*time.Minute, "the large image is being materialized", func() bool {
		img, _ := e.d.image(ref)
		return img.Materialized != nil && img.Materialized.State == "running" && img.Materialized.FilesDone > 0
	})
	large, _ := e.d.image(ref)
	e.d.stop(syscall.SIGKILL)
	if strings.Contains(e.ostree(t, "refs"), ostree.ImageRef(large.Digest)) {
		t.Logf("the kill came after the commit of %s; the restart must keep it", large.Digest)
	}
	e.d.start()
	var refs []string
	for _, v := range e.features {
		refs = append(refs, "ot/"+v.Name+":latest")
	}
	refs = append(refs, ref)
	e.d.settle(refs, 5*time.Minute)
	e.waitMaterialized(t, refs, 10*time.Minute)
	e.ostree(t, "fsck")
	// Every explodefs ref names a commit of an image the daemon shows.
	shown := map[string]string{}
	for _, img := range e.d.status().Images {
		if img.Materialized != nil && img.Materialized.State == "done" {
			shown[ostree.ImageRef(img.Digest)] = img.Materialized.Commit
		}
	}
	for line := range strings.Lines(e.ostree(t, "refs")) {
		r := strings.TrimSpace(line)
		if !strings.HasPrefix(r, ostree.ImageRefPrefix) {
			continue
		}
		commit, ok := shown[r]
		if !ok {
			t.Errorf("dangling ref %s: no image the daemon shows", r)
			continue
		}
		if got := strings.TrimSpace(e.ostree(t, "rev-parse", r)); got != commit {
			t.Errorf("ref %s = %s, the daemon recorded %s", r, got, commit)
		}
	}
	if len(shown) != len(refs) {
		t.Errorf("%d images committed, want %d", len(shown), len(refs))
	}
}
