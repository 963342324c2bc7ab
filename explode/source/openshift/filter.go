package openshift

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	imagev1 "github.com/openshift/api/image/v1"

	"github.com/explodefs/explodefs/explode/source"
)

// Filter decides which images of a stream are exploded.
type Filter struct {
	// RegistryHost is the integrated registry's host:port. When empty,
	// each stream's status.dockerImageRepository names it.
	RegistryHost string
	// External explodes images of other registries (and pull-through
	// images) too; by default they are skipped with a reason.
	External bool
	// HistoryDepth limits how many items of each tag's history are shown;
	// zero shows all.
	HistoryDepth int
}

// apply fills st's tags, history and skipped images from is's status.
// Current images come first in the history, so they are indexed first.
func (f Filter) apply(is *imagev1.ImageStream, st *source.Stream, log *slog.Logger) {
	internal := f.RegistryHost
	if internal == "" {
		internal = referenceHost(is.Status.DockerImageRepository)
	}
	tags := append([]imagev1.NamedTagEventList(nil), is.Status.Tags...)
	sort.Slice(tags, func(i, j int) bool { return tags[i].Tag < tags[j].Tag })
	var current, older []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, tag := range tags {
		if err := source.ValidateTag(tag.Tag); err != nil {
			log.Warn("skipping tag", "stream", st.Key(), "err", err)
			continue
		}
		items := tag.Items
		if f.HistoryDepth > 0 && len(items) > f.HistoryDepth {
			items = items[:f.HistoryDepth]
		}
		for i, item := range items {
			d := digest.Digest(item.Image)
			if err := d.Validate(); err != nil {
				log.Warn("skipping image with a bad digest", "stream", st.Key(), "tag", tag.Tag, "image", item.Image, "err", err)
				continue
			}
			if reason := f.skip(item.DockerImageReference, internal); reason != "" {
				st.Skipped[d] = reason
				continue
			}
			if i == 0 {
				st.Tags[tag.Tag] = d
			}
			if seen[d] {
				continue
			}
			seen[d] = true
			if i == 0 {
				current = append(current, d)
			} else {
				older = append(older, d)
			}
		}
	}
	st.History = append(current, older...)
	for d := range st.Skipped {
		if seen[d] {
			delete(st.Skipped, d) // another tag holds it from the registry
		}
	}
}

// skip says why an image reference is not exploded, or "" when it is.
func (f Filter) skip(ref, internal string) string {
	if f.External {
		return ""
	}
	host := referenceHost(ref)
	switch {
	case internal == "":
		return fmt.Sprintf("image %s: the integrated registry is not known (set --registry-host); external images are not exploded without --external-images", ref)
	case host != internal:
		return fmt.Sprintf("image %s is in registry %s, not in the integrated registry %s; --external-images explodes it", ref, host, internal)
	}
	return ""
}

// referenceHost returns the registry host of an image reference or
// repository ("host:port/ns/name@sha256:..."), as docker does: the first
// component when it looks like a host, docker.io otherwise.
func referenceHost(ref string) string {
	if ref == "" {
		return ""
	}
	first, _, found := strings.Cut(ref, "/")
	if !found || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		return "docker.io"
	}
	return first
}
