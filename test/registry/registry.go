// Package registry runs a real container registry for tests: Debian's
// docker-registry (docker/distribution 2.8, the code OpenShift's
// integrated registry is built on) with filesystem storage in a temporary
// directory, so a test can read the same blobs over the registry HTTP API
// and straight from the storage layout, as a file:// blob source does.
//
// It comes in two flavours: plain HTTP without auth, and HTTPS with a
// certificate from a test CA plus htpasswd basic auth, so that credentials
// and CA handling are exercised for real.
package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/test/cluster/harness"
)

// Registry is a running docker-registry.
type Registry struct {
	// Host is host:port, as image references and DOCKER_REGISTRY_SERVICE_*
	// name it.
	Host string
	// RootDir is the storage root directory, what a file:// blob source
	// points at: blobs are under docker/registry/v2/blobs/sha256/<2>/<hex>/data
	// and tags under docker/registry/v2/repositories/<name>/_manifests/tags/.
	RootDir string
	// CAPEM and CAFile are the CA that signed the registry's certificate,
	// in memory and as a file (for --registry-ca-file); empty for plain
	// HTTP.
	CAPEM  []byte
	CAFile string
	// Username and Password are the htpasswd credentials; empty for plain
	// HTTP, which takes anonymous pushes and pulls.
	Username, Password string
	// AuthFile is a docker config.json holding the credentials, the format
	// of a mounted pull secret (for --registry-auth-file); empty for plain
	// HTTP.
	AuthFile string
	// Client is an HTTP client for the registry: it trusts CAPEM and sends
	// no credentials of its own.
	Client *http.Client
}

// Option chooses a flavour of registry.
type Option func(*config)

type config struct {
	secure bool
}

// WithTLSAndAuth serves HTTPS with a certificate from a test CA (for
// 127.0.0.1 and localhost) and requires htpasswd basic auth with a random
// password.
func WithTLSAndAuth() Option { return func(c *config) { c.secure = true } }

// install is what a skip message tells the reader to provide.
const install = "apt-get install docker-registry apache2-utils, or hack/install-deps.sh"

// Start runs a registry for the test; it is killed at the test's cleanup.
// A missing docker-registry (or htpasswd, for WithTLSAndAuth) fails the
// test under CI=true and skips it elsewhere.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	binary, err := harness.LookPath("docker-registry")
	harness.Require(t, err, install)
	r, err := configure(t.TempDir(), cfg)
	harness.Require(t, err, install)

	p, err := harness.StartProcess(t, "docker-registry", filepath.Join(filepath.Dir(r.RootDir), "registry.log"),
		binary, "serve", filepath.Join(filepath.Dir(r.RootDir), "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx, r.ping); err != nil {
		t.Fatal(err)
	}
	return r
}

// configure writes the registry's configuration, certificates and
// htpasswd file into dir and picks its port.
func configure(dir string, cfg config) (*Registry, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	r := &Registry{
		Host:    "127.0.0.1:" + strconv.Itoa(port),
		RootDir: filepath.Join(dir, "storage"),
		Client:  &http.Client{Timeout: time.Minute},
	}
	if err := os.Mkdir(r.RootDir, 0o755); err != nil {
		return nil, err
	}
	var tlsSection, authSection string
	if cfg.secure {
		if tlsSection, err = r.writeTLS(dir); err != nil {
			return nil, err
		}
		if authSection, err = r.writeAuth(dir); err != nil {
			return nil, err
		}
	}
	// uploadpurging is off: its first run, minutes after start, would walk
	// the storage while a test reads it.
	yml := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
%s%s`, r.RootDir, r.Host, tlsSection, authSection)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(yml), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Registry) writeTLS(dir string) (string, error) {
	ca, err := harness.NewCA("explodefs-test-registry-ca")
	if err != nil {
		return "", err
	}
	serving, err := ca.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		return "", err
	}
	r.CAPEM, r.CAFile = ca.CertPEM, filepath.Join(dir, "ca.crt")
	certFile, keyFile := filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	for path, data := range map[string][]byte{r.CAFile: ca.CertPEM, certFile: serving.CertPEM, keyFile: serving.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return "", err
		}
	}
	r.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	return fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", certFile, keyFile), nil
}

// writeAuth makes the credentials and their htpasswd entry. distribution
// takes only bcrypt entries; the root module has no bcrypt, and Debian's
// htpasswd (apache2-utils) writes them.
func (r *Registry) writeAuth(dir string) (string, error) {
	htpasswd, err := harness.LookPath("htpasswd")
	if err != nil {
		return "", err
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	r.Username, r.Password = "explodefs", hex.EncodeToString(secret)
	// -i reads the password from stdin, so it never shows in ps.
	cmd := exec.Command(htpasswd, "-niB", r.Username)
	cmd.Stdin = bytes.NewBufferString(r.Password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	entry, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("htpasswd: %w: %s", err, stderr.Bytes())
	}
	htpasswdFile := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswdFile, entry, 0o600); err != nil {
		return "", err
	}
	auth := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))
	dockerConfig, err := json.Marshal(map[string]any{"auths": map[string]any{r.Host: map[string]string{"auth": auth}}})
	if err != nil {
		return "", err
	}
	r.AuthFile = filepath.Join(dir, "config.json")
	if err := os.WriteFile(r.AuthFile, dockerConfig, 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: explodefs-test\n    path: %s\n", htpasswdFile), nil
}

// ping is ready once /v2/ answers as a registry does: 200, or 401 when
// auth is on.
func (r *Registry) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}

// URL is the registry's base URL, http:// or https://, as --blob-source
// takes it.
func (r *Registry) URL() string {
	if r.CAPEM != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// BlobPath is where the storage keeps blob d's bytes.
func (r *Registry) BlobPath(d digest.Digest) string {
	hexDigest := d.Encoded()
	return filepath.Join(r.RootDir, "docker", "registry", "v2", "blobs", d.Algorithm().String(), hexDigest[:2], hexDigest, "data")
}

// Reference is the pull spec of repository:tag in this registry,
// <host>/<repository>:<tag>; repository is <namespace>/<stream> for an
// OpenShift image stream.
func (r *Registry) Reference(repository, tag string) string {
	return r.Host + "/" + repository + ":" + tag
}
