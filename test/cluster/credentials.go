package cluster

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/explodefs/explodefs/test/cluster/harness"
)

// adminUser is the admin's user name; the group system:masters is what
// grants it everything.
const adminUser = "explodefs-test-admin"

// writeCredentials makes the test CA, the serving and admin certificates,
// the admin kubeconfig and the dummy kubeconfig the server's delegated
// auth flags need, and picks the server's port, which the serving
// certificate and the kubeconfig do not depend on but URL does.
func (c *Cluster) writeCredentials() error {
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)

	ca, err := harness.NewCA("explodefs-test-apiserver-ca")
	if err != nil {
		return err
	}
	serving, err := ca.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	admin, err := ca.IssueClient(adminUser, "system:masters")
	if err != nil {
		return err
	}
	c.CAPEM, c.ClientCertPEM, c.ClientKeyPEM = ca.CertPEM, admin.CertPEM, admin.KeyPEM
	cert, err := admin.TLSCertificate()
	if err != nil {
		return err
	}
	c.Client = newClient(ca.Pool(), cert)

	c.Kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	files := map[string][]byte{
		"ca.crt":           ca.CertPEM,
		"serving.crt":      serving.CertPEM,
		"serving.key":      serving.KeyPEM,
		"admin.kubeconfig": kubeconfig(c.URL, ca.CertPEM, admin),
		"dummy.kubeconfig": kubeconfig("https://127.0.0.1:1", ca.CertPEM, admin),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// kubeconfig is a kubeconfig with everything inline, so it can be copied
// or mounted without the files next to it.
func kubeconfig(server string, caPEM []byte, user harness.KeyPair) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: explodefs-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: explodefs-test
  context:
    cluster: explodefs-test
    user: %s
current-context: explodefs-test
`, server, b64(caPEM), adminUser, b64(user.CertPEM), b64(user.KeyPEM), adminUser)
}
