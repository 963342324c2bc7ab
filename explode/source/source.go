// Package source is the seam between explodefs and whatever announces
// image streams: OpenShift ImageStreams, or a directory of OCI layouts.
// Implementations live in subpackages, one each.
package source

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// Stream is the whole current state of one image stream.
type Stream struct {
	Namespace string
	Name      string
	// Tags maps each tag to the digest of the manifest (or image index) it
	// names.
	Tags map[string]digest.Digest
	// History lists every image of the stream, tagged or not, including
	// the tagged ones.
	History []digest.Digest
	// Skipped names images of the stream that are not exploded, with the
	// reason (an image outside the integrated registry, say).
	Skipped map[digest.Digest]string
	// Blobs opens the stream's manifests, configs and layers by digest.
	Blobs blob.Source
}

// Key returns "namespace/name".
func (s Stream) Key() string { return s.Namespace + "/" + s.Name }

// Equal reports whether two states show the same tags, history and
// skipped images.
func (s Stream) Equal(o Stream) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name &&
		maps.Equal(s.Tags, o.Tags) && slices.Equal(s.History, o.History) && maps.Equal(s.Skipped, o.Skipped)
}

// Sink receives stream changes. A source calls it from one goroutine.
type Sink interface {
	// StreamChanged delivers the new full state of a stream.
	StreamChanged(Stream)
	// StreamRemoved says a stream is gone.
	StreamRemoved(namespace, name string)
	// StreamFailed says a stream's current state could not be read (a
	// document caught mid-rewrite, say). The stream keeps its last good
	// state until a StreamChanged or StreamRemoved.
	StreamFailed(namespace, name string, err error)
	// Synced says the source has reported every stream it had when it
	// started; until then the daemon is not ready.
	Synced()
}

// Source watches image streams and reports them to a Sink until ctx ends.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// Names must be usable as single path components of the mount. These are
// Kubernetes' DNS label rules for namespaces and OpenShift's stream name
// rules (DNS subdomain-like), and the Docker tag grammar.
var (
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	streamRE    = regexp.MustCompile(`^[a-z0-9]([-._a-z0-9]{0,253}[a-z0-9])?$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

// ValidateNames checks that namespace and stream names are safe to show.
func ValidateNames(namespace, stream string) error {
	if !namespaceRE.MatchString(namespace) {
		return fmt.Errorf("namespace name %q is not a DNS label", namespace)
	}
	if !streamRE.MatchString(stream) || stream == "." || stream == ".." {
		return fmt.Errorf("image stream name %q is not valid", stream)
	}
	return nil
}

// ValidateTag checks that a tag follows the Docker tag grammar, which also
// keeps it a safe file name that cannot collide with "@sha256:" entries.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("tag %q is not a valid image tag", tag)
	}
	return nil
}
