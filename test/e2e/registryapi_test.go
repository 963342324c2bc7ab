package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/registry"
)

// TestOpenShiftRegistryAPI reads every blob over the registry's API, with
// TLS and htpasswd, through a proxy that breaks a share of the requests:
// the files read through the mount are right, or the read fails; never
// wrong bytes.
func TestOpenShiftRegistryAPI(t *testing.T) {
	e, bin := newOSEnv(t, registry.WithTLSAndAuth())
	dir := e.dir

	proxy, err := blobtest.NewFaultProxy("https://"+e.reg.Host, e.reg.Client.Transport, blobtest.Faults{
		ServerError: 0.15, CutShort: 0.1, Stall: 0.02, StallBody: 0.02, StallFor: 2 * time.Second, IgnoreRange: 0.05, ShiftRange: 0.05, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	proxyURL, _ := url.Parse(srv.URL)
	// The daemon's credentials are for the host it talks to: the proxy,
	// which passes them on.
	authFile := filepath.Join(dir, "config.json")
	auths := map[string]any{"auths": map[string]any{proxyURL.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(e.reg.Username + ":" + e.reg.Password))}}}
	raw, _ := json.Marshal(auths)
	if err := os.WriteFile(authFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	e.d = newDaemon(t, bin, "", e.mnt, filepath.Join(dir, "state"))
	e.d.args = []string{"serve", "--source", "openshift", "--mountpoint", e.mnt,
		"--state-dir", filepath.Join(dir, "state"), "--listen", e.d.listen, "--retry-backoff", "500ms",
		"--kubeconfig", e.c.Kubeconfig, "--namespace", "team", "--blob-source", srv.URL,
		"--registry-host", e.reg.Host, "--registry-auth-file", authFile}
	e.d.start()

	content := imagegen.Text(11, 12<<20)
	img := imagegen.SingleImage(imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.File("big.txt", 0o644, content), imagegen.File("small", 0o644, imagegen.String("small file\n")))})
	d, _ := e.push(t, "team", "api", "latest", img)
	e.setTags(t, "team", "api", map[string][]string{"latest": {e.ref("team", "api", d)}})
	e.waitTag(t, "team", "api", "latest", d)

	want := readAllContent(t, content)
	wantSum := sha256.Sum256(want)
	good, failed := 0, 0
	for range 5 {
		_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		got, err := os.ReadFile(filepath.Join(e.tagPath("team", "api", "latest"), "big.txt"))
		switch {
		case err == nil && sha256.Sum256(got) == wantSum:
			good++
		case err == nil:
			t.Fatalf("wrong bytes read through a faulty registry (%d bytes)", len(got))
		case errors.Is(err, syscall.EIO):
			failed++
		default:
			t.Fatalf("read: %v", err)
		}
	}
	if good == 0 {
		t.Errorf("no read succeeded through the faults (%d failed)", failed)
	}
	injected := proxy.Injected()
	if injected[blobtest.ServerError] == 0 || injected[blobtest.CutShort] == 0 {
		t.Errorf("the proxy broke too little to mean anything: %v", injected)
	}
	t.Logf("reads: %d right, %d EIO; faults injected: %v", good, failed, injected)
	if log, _ := os.ReadFile(e.d.log); bytes.Contains(log, []byte(e.reg.Password)) {
		t.Error("the registry password appears in the daemon log")
	}
	if raw, _ := json.Marshal(e.d.status()); bytes.Contains(raw, []byte(e.reg.Password)) {
		t.Error("the registry password appears in the status")
	}
}

// readAllContent renders generated content to bytes.
func readAllContent(t *testing.T, c imagegen.Content) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
