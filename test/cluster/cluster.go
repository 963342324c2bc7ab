// Package cluster runs a real Kubernetes API server for tests: etcd and
// k8s.io/apiextensions-apiserver, built from the Go module proxy by
// hack/apiserver/build.sh, with OpenShift's image.openshift.io/v1
// ImageStream and Image served as custom resources. There is no OpenShift
// here; this gives tests the real watch semantics an informer depends on
// (resource versions, bookmarks, 410 Gone, a server that goes away and
// comes back), which fakes do not.
//
// The package talks to the server with net/http and JSON only, so using it
// does not pull Kubernetes modules into the root module. The server has no
// core v1 API (no Namespaces, Secrets or Events); namespaced custom
// resources work without Namespace objects.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/explodefs/explodefs/test/cluster/harness"
)

// BinDirEnv names the environment variable that overrides where
// hack/apiserver/build.sh caches the binaries
// (default /var/cache/explodefs-test/bin).
const BinDirEnv = "EXPLODEFS_TEST_BIN_DIR"

// install is what a skip message tells the reader to provide.
const install = "run hack/apiserver/build.sh (needs Go from hack/install-go.sh and the Go module proxy; a cold build takes ~4 min), or make test-infra"

// startTimeout bounds each wait for a server to come up. A cold apiserver
// start on the shared 2-core machine takes a few seconds.
const startTimeout = 90 * time.Second

// Cluster is a running etcd and API server with the image.openshift.io/v1
// CRDs established. Its methods may be called from several goroutines.
type Cluster struct {
	// Kubeconfig is the path of a kubeconfig file for the admin user
	// (client certificate, O=system:masters), as --kubeconfig takes it.
	Kubeconfig string
	// URL is the API server's base URL, https://127.0.0.1:<port>. It stays
	// the same across RestartAPIServer.
	URL string
	// CAPEM is the CA that signed the server's certificate and that the
	// server trusts for client certificates.
	CAPEM []byte
	// ClientCertPEM and ClientKeyPEM are the admin client certificate
	// (CN=explodefs-test-admin, O=system:masters) and its key.
	ClientCertPEM, ClientKeyPEM []byte
	// Client is an HTTP client that trusts CAPEM and presents the admin
	// certificate; no bearer token is involved.
	Client *http.Client
	// EtcdURL is etcd's client URL (plain HTTP on loopback); its
	// grpc-gateway answers JSON under /v3/.
	EtcdURL string

	t          testing.TB
	dir        string
	apiserver  string // binary
	serverArgs []string

	mu            sync.Mutex
	running       *harness.Process // the API server; nil while stopped
	crdsInstalled bool
}

// Option changes how Start runs the servers.
type Option func(*config)

type config struct {
	extraServerArgs []string
}

// WithAPIServerArgs adds flags to the API server's command line, e.g.
// "--watch-cache=false" so that watches are served by etcd directly and a
// compaction alone makes an old resourceVersion answer 410 Gone.
func WithAPIServerArgs(args ...string) Option {
	return func(c *config) { c.extraServerArgs = append(c.extraServerArgs, args...) }
}

// Start builds the binaries if needed (see hack/apiserver/build.sh), starts
// etcd and the API server on free loopback ports in a temporary directory,
// installs the ImageStream and Image CRDs and waits until they are served.
// Everything is stopped at the test's cleanup. A missing build fails the
// test under CI=true and skips it elsewhere.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	bins, err := build()
	harness.Require(t, err, install)

	c := &Cluster{t: t, dir: t.TempDir(), apiserver: bins["APISERVER"]}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.startEtcd(ctx, bins["ETCD"]); err != nil {
		t.Fatal(err)
	}
	if err := c.writeCredentials(); err != nil {
		t.Fatal(err)
	}
	c.serverArgs = append(c.baseServerArgs(), cfg.extraServerArgs...)
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := c.installCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// build runs hack/apiserver/build.sh, which returns at once when the
// pinned binaries are cached, and reads the paths it prints.
func build() (map[string]string, error) {
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", script, err, lastLines(stderr.String(), 20))
	}
	bins := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			bins[k] = v
		}
	}
	for _, k := range []string{"ETCD", "APISERVER"} {
		if _, err := os.Stat(bins[k]); err != nil {
			return nil, fmt.Errorf("%s printed no usable %s path: %v", script, k, err)
		}
	}
	return bins, nil
}

// findScript looks for hack/apiserver/build.sh from the working directory
// up: go test runs a package's tests in its own directory, which is always
// inside the checkout, whichever package uses this one.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		script := filepath.Join(dir, "hack", "apiserver", "build.sh")
		if _, err := os.Stat(script); err == nil {
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("hack/apiserver/build.sh not found above the working directory")
		}
		dir = parent
	}
}

func (c *Cluster) startEtcd(ctx context.Context, binary string) error {
	clientPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	peerPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := harness.StartProcess(c.t, "etcd", filepath.Join(c.dir, "etcd.log"), binary,
		"--name=test",
		"--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+c.EtcdURL,
		"--advertise-client-urls="+c.EtcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		// Test data need not survive a power cut; fsyncs would only slow
		// every write on a shared disk.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	return etcd.WaitReady(ctx, func(ctx context.Context) error {
		var health struct {
			Health string `json:"health"`
		}
		if err := getJSON(ctx, plain, c.EtcdURL+"/health", &health); err != nil {
			return err
		}
		if health.Health != "true" {
			return fmt.Errorf("etcd /health says %q", health.Health)
		}
		return nil
	})
}

// baseServerArgs are the flags a standalone apiextensions-apiserver needs.
// The delegated authentication and authorization kubeconfigs point at a
// server that is not there: the admin is let through by its client
// certificate and the system:masters group without asking anyone.
func (c *Cluster) baseServerArgs() []string {
	dummy := filepath.Join(c.dir, "dummy.kubeconfig")
	port := strings.TrimPrefix(c.URL, "https://127.0.0.1:")
	return []string{
		"--etcd-servers=" + c.EtcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + port,
		"--tls-cert-file=" + filepath.Join(c.dir, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(c.dir, "serving.key"),
		"--client-ca-file=" + filepath.Join(c.dir, "ca.crt"),
		"--authentication-skip-lookup",
		"--authentication-kubeconfig=" + dummy,
		"--authorization-kubeconfig=" + dummy,
		"--kubeconfig=" + dummy,
		"--enable-priority-and-fairness=false",
		"--disable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy",
	}
}

// StartAPIServer starts the API server (again) on its port, against the
// same etcd, and waits until /healthz answers ok and, once the CRDs are
// installed, until ImageStreams are served. Use it after StopAPIServer.
func (c *Cluster) StartAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running != nil {
		return fmt.Errorf("the API server is already running")
	}
	p, err := harness.StartProcess(c.t, "apiextensions-apiserver", filepath.Join(c.dir, "apiserver.log"), c.apiserver, c.serverArgs...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := p.WaitReady(ctx, c.ready); err != nil {
		p.Stop()
		return err
	}
	c.running = p
	return nil
}

// ready is true once /healthz says ok (/readyz of a standalone
// apiextensions-apiserver never does) and, when the CRDs were installed
// before, ImageStreams are served: after a restart the CRD handler answers
// 404 until its informer has synced.
func (c *Cluster) ready(ctx context.Context) error {
	if err := c.healthz(ctx); err != nil {
		return err
	}
	if !c.crdsInstalled {
		return nil
	}
	return c.Do(ctx, http.MethodGet, imageStreamsPath("")+"?limit=1", nil, nil)
}

func (c *Cluster) healthz(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := readSome(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s: %s", resp.Status, body)
	}
	return nil
}

// StopAPIServer kills the API server process alone, as a crash would:
// open watches are cut, etcd and its data stay. Stopping a stopped server
// is harmless.
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running != nil {
		c.running.Stop()
		c.running = nil
	}
	// Connections to the dead server would otherwise be tried again.
	if tr, ok := c.Client.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// RestartAPIServer stops the API server and starts it again.
func (c *Cluster) RestartAPIServer() error {
	c.StopAPIServer()
	return c.StartAPIServer()
}

// APIServerPid is the API server's process id, 0 while it is stopped.
func (c *Cluster) APIServerPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running == nil {
		return 0
	}
	return c.running.Pid()
}

func newClient(pool *x509.CertPool, cert tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}}
}

// lastLines keeps the end of a build log, where go build says what failed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
