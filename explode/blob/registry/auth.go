package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
)

// AuthFile returns a keychain that reads the docker config.json at path:
// the --registry-auth-file format, and what a mounted pull secret holds
// (.dockerconfigjson, or the older .dockercfg without "auths"). The file
// is read once here, so that a broken file fails at start, and again
// whenever it changed when credentials are needed, so that a rotated
// pull secret is picked up without a restart.
//
// An entry matches a repository by its host[:port], or by host[:port]/path
// when the path is a prefix of the repository's, the longest match
// winning, as Kubernetes matches pull secrets. Credential helpers
// ("credsStore", "credHelpers") are not run: a pull secret names none, and
// the daemon runs no programs it was not given. A repository no entry
// matches is read anonymously.
func AuthFile(path string) (authn.Keychain, error) {
	f := &authFile{path: path}
	if _, err := f.entries(); err != nil {
		return nil, err
	}
	return f, nil
}

type authFile struct {
	path string

	mu     sync.Mutex
	stamp  string // size and modification time of the file last read
	cached map[string]authn.AuthConfig
}

// entries returns the file's entries, reading it again only when it
// changed: credentials are asked for at every request to a registry that
// takes basic auth.
func (f *authFile) entries() (map[string]authn.AuthConfig, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	stamp := fmt.Sprintf("%d@%d", fi.Size(), fi.ModTime().UnixNano())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cached != nil && stamp == f.stamp {
		return f.cached, nil
	}
	entries, err := readAuthFile(f.path)
	if err != nil {
		return nil, err
	}
	f.stamp, f.cached = stamp, entries
	return entries, nil
}

// Resolve implements authn.Keychain. The authenticator it returns looks
// the file up at each use.
func (f *authFile) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if _, err := f.entries(); err != nil {
		return nil, err
	}
	return authFileEntry{file: f, target: target}, nil
}

// authFileEntry is the entry of the auth file for one repository, as it
// is now.
type authFileEntry struct {
	file   *authFile
	target authn.Resource
}

func (e authFileEntry) Authorization() (*authn.AuthConfig, error) {
	entries, err := e.file.entries()
	if err != nil {
		return nil, err
	}
	cfg, ok := matchAuth(entries, e.target)
	if !ok {
		return &authn.AuthConfig{}, nil
	}
	return &cfg, nil
}

// readAuthFile parses the file without ever quoting it: it holds secrets.
func readAuthFile(path string) (map[string]authn.AuthConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("auth file %s is not a docker config.json (%s)", path, jsonErrorPlace(err))
	}
	entries := map[string]authn.AuthConfig{}
	if auths, ok := top["auths"]; ok {
		if err := json.Unmarshal(auths, &entries); err != nil {
			return nil, fmt.Errorf("auth file %s: its \"auths\" do not parse (%s)", path, jsonErrorPlace(err))
		}
		return entries, nil
	}
	// .dockercfg: the registries at the top level. Other keys
	// (credsStore, say) hold no object and are passed over.
	for key, v := range top {
		if !bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
			continue
		}
		var cfg authn.AuthConfig
		if err := json.Unmarshal(v, &cfg); err != nil {
			return nil, fmt.Errorf("auth file %s: the entry of %q does not parse (%s)", path, key, jsonErrorPlace(err))
		}
		entries[key] = cfg
	}
	return entries, nil
}

// jsonErrorPlace says where JSON went wrong without quoting any of it.
func jsonErrorPlace(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("a %s where %s belongs, at byte %d", typ.Value, typ.Type, typ.Offset)
	}
	return "an entry is malformed"
}

// matchAuth picks the entry for target: keys may carry a scheme and a
// path ("https://host:5000/v1/", "host:5000/ns").
func matchAuth(entries map[string]authn.AuthConfig, target authn.Resource) (authn.AuthConfig, bool) {
	host := strings.ToLower(target.RegistryStr())
	repo := strings.TrimPrefix(target.String(), target.RegistryStr())
	var best authn.AuthConfig
	bestLen := -1
	for key, cfg := range entries {
		k := key
		if _, rest, ok := strings.Cut(k, "://"); ok {
			k = rest
		}
		k = strings.TrimRight(k, "/")
		for _, api := range []string{"/v1", "/v2"} {
			k = strings.TrimSuffix(k, api)
		}
		keyHost, keyPath, _ := strings.Cut(k, "/")
		if strings.ToLower(keyHost) != host {
			continue
		}
		if keyPath != "" && repo != "/"+keyPath && !strings.HasPrefix(repo, "/"+keyPath+"/") {
			continue
		}
		if len(keyPath) > bestLen {
			best, bestLen = cfg, len(keyPath)
		}
	}
	return best, bestLen >= 0
}

// serviceAccountUser is the user name sent with a token: OpenShift's
// registry takes any name and checks only the token given as password.
const serviceAccountUser = "serviceaccount"

// TokenAuth authenticates with a bearer token given as the password of
// basic auth, which is how OpenShift's integrated registry takes a
// service account's token (and KUBERNETES_SERVICE_TOKEN).
func TokenAuth(token string) authn.Authenticator {
	return &authn.Basic{Username: serviceAccountUser, Password: strings.TrimSpace(token)}
}

// TokenFileAuth is TokenAuth with the token read from path at each use,
// so that a pod's projected service account token, which the kubelet
// rotates, keeps working.
func TokenFileAuth(path string) authn.Authenticator { return tokenFile{path: path} }

type tokenFile struct{ path string }

var _ authn.ContextAuthenticator = tokenFile{}

func (t tokenFile) Authorization() (*authn.AuthConfig, error) {
	return t.AuthorizationContext(context.Background())
}

func (t tokenFile) AuthorizationContext(context.Context) (*authn.AuthConfig, error) {
	raw, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return nil, fmt.Errorf("token file %s is empty", t.path)
	}
	return &authn.AuthConfig{Username: serviceAccountUser, Password: token}, nil
}
