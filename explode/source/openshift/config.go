package openshift

import (
	"fmt"
	"net"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientOptions says how to reach the API server.
type ClientOptions struct {
	// Kubeconfig is a kubeconfig file to use (--kubeconfig, KUBECONFIG).
	Kubeconfig string
	// Host and Token reach the API server as os-explode did, from
	// KUBERNETES_SERVICE_HOST/PORT and KUBERNETES_SERVICE_TOKEN; inside a
	// pod without a token in the environment, the service account's token
	// file is used.
	Host, Port, Token string
	// Insecure skips verifying the API server's certificate
	// (OS_WATCH_INSECURE).
	Insecure bool
}

// ClientOptionsFromEnv reads os-explode's variables and KUBECONFIG.
func ClientOptionsFromEnv(getenv func(string) string) ClientOptions {
	return ClientOptions{
		Kubeconfig: getenv("KUBECONFIG"),
		Host:       getenv("KUBERNETES_SERVICE_HOST"),
		Port:       getenv("KUBERNETES_SERVICE_PORT"),
		Token:      getenv("KUBERNETES_SERVICE_TOKEN"),
		Insecure:   getenv("OS_WATCH_INSECURE") == "true",
	}
}

// inClusterCA is where a pod finds the cluster's CA.
const inClusterCA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

// RESTConfig builds the client configuration: a kubeconfig when one is
// named; else the service host of the environment with its token (or the
// pod's own); else the default kubeconfig locations. Requests use JSON,
// which every API server serving ImageStreams speaks.
func RESTConfig(o ClientOptions) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case o.Kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
		}
	case o.Host != "" && o.Token != "":
		port := o.Port
		if port == "" {
			port = "443"
		}
		cfg = &rest.Config{Host: "https://" + net.JoinHostPort(o.Host, port), BearerToken: o.Token}
		if _, err := os.Stat(inClusterCA); err == nil {
			cfg.TLSClientConfig.CAFile = inClusterCA
		}
	case o.Host != "":
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration for %s: %w", o.Host, err)
		}
	default:
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("no cluster configured (--kubeconfig, KUBECONFIG, or KUBERNETES_SERVICE_HOST): %w", err)
		}
	}
	if o.Insecure {
		cfg.TLSClientConfig.Insecure = true
		cfg.TLSClientConfig.CAFile, cfg.TLSClientConfig.CAData = "", nil
	}
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	cfg.UserAgent = "explodefs"
	return cfg, nil
}
