package openshift_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/explodefs/explodefs/explode/source/openshift"
)

// os-explode's variables keep their meaning: the service host and port,
// the token as bearer token, OS_WATCH_INSECURE.
func TestClientOptionsFromEnv(t *testing.T) {
	env := map[string]string{
		"KUBERNETES_SERVICE_HOST":  "api.example",
		"KUBERNETES_SERVICE_PORT":  "6443",
		"KUBERNETES_SERVICE_TOKEN": "s3cret-token",
		"OS_WATCH_INSECURE":        "true",
	}
	cfg, err := openshift.RESTConfig(openshift.ClientOptionsFromEnv(func(k string) string { return env[k] }))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://api.example:6443" || cfg.BearerToken != "s3cret-token" || !cfg.TLSClientConfig.Insecure {
		t.Errorf("config host %q, token set %v, insecure %v", cfg.Host, cfg.BearerToken != "", cfg.TLSClientConfig.Insecure)
	}
	if cfg.ContentType != "application/json" {
		t.Errorf("content type %q; the CRD-served API needs JSON", cfg.ContentType)
	}
}

// A kubeconfig wins, and a broken one is an error that names the file but
// never the credentials in it.
func TestKubeconfigErrorsKeepSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte("apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: s3cret-token\ncurrent-context: missing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openshift.RESTConfig(openshift.ClientOptions{Kubeconfig: path, Token: "other-s3cret"})
	if err == nil {
		t.Fatal("a kubeconfig without its context was accepted")
	}
	if !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q should name the file and no secret", err)
	}
}
