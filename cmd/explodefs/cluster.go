package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	imageclient "github.com/openshift/client-go/image/clientset/versioned"
	"github.com/spf13/pflag"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/distribution"
	"github.com/explodefs/explodefs/explode/blob/registry"
	"github.com/explodefs/explodefs/explode/metrics"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/source/openshift"
)

// clusterConfig is what the openshift source needs.
type clusterConfig struct {
	kubeconfig       string
	namespace        string
	apiInsecure      bool
	blobSources      string
	registryHost     string
	externalImages   bool
	historyDepth     int
	registryAuthFile string
	registryCAFile   string
	registryInsecure bool
}

// saTokenFile is a pod's service account token, which the integrated
// registry takes as a password.
const saTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

func addClusterFlags(f *pflag.FlagSet, c *clusterConfig) {
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster, for --source openshift outside a pod")
	legacyEnv(f, "kubeconfig", "KUBECONFIG")
	f.StringVar(&c.namespace, "namespace", "", "watch the image streams of one namespace; all when empty")
	legacyEnv(f, "namespace", "OS_WATCH_NAMESPACE")
	f.BoolVar(&c.apiInsecure, "api-insecure", false, "do not verify the API server's certificate")
	legacyEnv(f, "api-insecure", "OS_WATCH_INSECURE")
	f.StringVar(&c.blobSources, "blob-source", "file:///registry", "where --source openshift reads blobs: file:///PATH (the registry's storage) and/or https://HOST[:PORT] or http://HOST[:PORT] (its API); comma-separated, tried in order")
	legacyEnv(f, "blob-source", "OS_IMAGE_BLOB_SOURCE")
	f.StringVar(&c.registryHost, "registry-host", "", "the integrated registry's HOST:PORT as image references name it; else $DOCKER_REGISTRY_SERVICE_HOST:$DOCKER_REGISTRY_SERVICE_PORT, else each stream's status.dockerImageRepository")
	f.BoolVar(&c.externalImages, "external-images", false, "also explode images of other registries named by the streams")
	f.IntVar(&c.historyDepth, "history-depth", 0, "how many items of each tag's history are shown; 0 shows all")
	f.StringVar(&c.registryAuthFile, "registry-auth-file", "", "docker config.json with registry credentials (a mounted pull secret); else the pod's service account token, else anonymous")
	f.StringVar(&c.registryCAFile, "registry-ca-file", "", "PEM CA certificates the registry's TLS certificate is verified against, besides the system's")
	f.BoolVar(&c.registryInsecure, "registry-insecure", false, "do not verify the registry's TLS certificate")
}

// registryHostFromEnv is os-explode's way of naming the registry.
func registryHostFromEnv() string {
	host := os.Getenv("DOCKER_REGISTRY_SERVICE_HOST")
	if host == "" {
		return ""
	}
	port := os.Getenv("DOCKER_REGISTRY_SERVICE_PORT")
	if port == "" {
		return host
	}
	return net.JoinHostPort(host, port)
}

func newOpenShiftSource(c clusterConfig, resync time.Duration, log *slog.Logger, obs *metrics.Metrics) (source.Source, error) {
	env := openshift.ClientOptionsFromEnv(os.Getenv)
	env.Kubeconfig, env.Insecure = c.kubeconfig, c.apiInsecure
	cfg, err := openshift.RESTConfig(env)
	if err != nil {
		return nil, err
	}
	if c.apiInsecure {
		log.Warn("not verifying the API server's certificate", "server", cfg.Host)
	}
	client, err := imageclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	blobsFor, err := newBlobsFor(c, log, obs)
	if err != nil {
		return nil, err
	}
	host := c.registryHost
	if host == "" {
		host = registryHostFromEnv()
	}
	log.Info("watching image streams", "server", cfg.Host, "namespace", c.namespace, "blob_source", c.blobSources, "registry_host", host)
	opts := []openshift.Option{
		openshift.WithNamespace(c.namespace),
		openshift.WithFilter(openshift.Filter{RegistryHost: host, External: c.externalImages, HistoryDepth: c.historyDepth}),
		openshift.WithResync(resync),
		openshift.WithLogger(log),
	}
	if obs != nil {
		opts = append(opts, openshift.WithRestartObserver(obs))
	}
	return openshift.New(client, blobsFor, opts...), nil
}

// newBlobsFor turns --blob-source into each stream's blob source: the
// registry's storage is shared by all streams, its API is read per
// repository, and several are tried in order, so that a pull-through blob
// the storage lacks comes over the API.
func newBlobsFor(c clusterConfig, log *slog.Logger, obs *metrics.Metrics) (openshift.BlobsFor, error) {
	var storages []blob.Source
	var apis []*registry.Registry
	var order []string
	for _, raw := range strings.Split(c.blobSources, ",") {
		raw = strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(raw, "file://"):
			src, err := distribution.FromURL(raw)
			if err != nil {
				return nil, fmt.Errorf("--blob-source %s: %w", raw, err)
			}
			storages = append(storages, src)
			order = append(order, "file")
		case strings.HasPrefix(raw, "https://"), strings.HasPrefix(raw, "http://"):
			opts, err := registryOptions(c, log)
			if err != nil {
				return nil, err
			}
			if obs != nil {
				opts = append(opts, registry.WithErrorObserver(obs))
			}
			reg, err := registry.New(raw, opts...)
			if err != nil {
				return nil, fmt.Errorf("--blob-source %s: %w", raw, err)
			}
			if reg.Insecure() {
				log.Warn("not verifying the registry's TLS certificate", "registry", reg.String())
			}
			apis = append(apis, reg)
			order = append(order, "api")
		default:
			return nil, fmt.Errorf("--blob-source %q: want file:///PATH, https://HOST[:PORT] or http://HOST[:PORT]", raw)
		}
	}
	if len(order) == 0 {
		return nil, errors.New("--blob-source is empty")
	}
	return func(namespace, stream string) blob.Source {
		var srcs []blob.Source
		si, ai := 0, 0
		for _, kind := range order {
			if kind == "file" {
				srcs = append(srcs, storages[si])
				si++
				continue
			}
			repo, err := apis[ai].Repository(namespace + "/" + stream)
			ai++
			if err != nil {
				log.Error("registry repository", "stream", namespace+"/"+stream, "err", err)
				continue
			}
			srcs = append(srcs, repo)
		}
		if len(srcs) == 1 {
			return srcs[0]
		}
		return blob.FirstOf(srcs...)
	}, nil
}

// registryOptions sets how the registry API authenticates and verifies.
func registryOptions(c clusterConfig, log *slog.Logger) ([]registry.Option, error) {
	var opts []registry.Option
	switch {
	case c.registryAuthFile != "":
		kc, err := registry.AuthFile(c.registryAuthFile)
		if err != nil {
			return nil, fmt.Errorf("--registry-auth-file: %w", err)
		}
		opts = append(opts, registry.WithKeychain(kc))
	case os.Getenv("KUBERNETES_SERVICE_TOKEN") != "":
		opts = append(opts, registry.WithAuthenticator(registry.TokenAuth(os.Getenv("KUBERNETES_SERVICE_TOKEN"))))
	default:
		if _, err := os.Stat(saTokenFile); err == nil {
			opts = append(opts, registry.WithAuthenticator(registry.TokenFileAuth(saTokenFile)))
		} else {
			log.Info("no registry credentials configured; reading the registry anonymously")
		}
	}
	if c.registryCAFile != "" {
		opts = append(opts, registry.WithCAFile(c.registryCAFile))
	}
	if c.registryInsecure {
		opts = append(opts, registry.WithInsecure(true))
	}
	return opts, nil
}
