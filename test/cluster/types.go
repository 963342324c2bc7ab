package cluster

import "time"

// ImageStream is the part of OpenShift's image.openshift.io/v1 ImageStream
// that explodefs reads, in its JSON form. The CRDs keep unknown fields, so
// a test that needs more can send its own map through Do.
type ImageStream struct {
	APIVersion string            `json:"apiVersion,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	Metadata   ObjectMeta        `json:"metadata"`
	Spec       ImageStreamSpec   `json:"spec,omitzero"`
	Status     ImageStreamStatus `json:"status,omitzero"`
}

// ImageStreamList is the answer of a list of ImageStreams; its
// resourceVersion is where a watch continues.
type ImageStreamList struct {
	Metadata ListMeta      `json:"metadata"`
	Items    []ImageStream `json:"items"`
}

// ObjectMeta is the metadata the tests set or check.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// ListMeta is a list's metadata.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Continue        string `json:"continue,omitempty"`
}

// ImageStreamSpec is what a user asks of a stream; OpenShift's registry
// and importer answer in the status.
type ImageStreamSpec struct {
	DockerImageRepository string         `json:"dockerImageRepository,omitempty"`
	Tags                  []TagReference `json:"tags,omitempty"`
}

// TagReference is a spec tag: where its image comes from.
type TagReference struct {
	Name        string            `json:"name"`
	Annotations map[string]string `json:"annotations,omitempty"`
	From        *ObjectReference  `json:"from,omitempty"`
	Generation  *int64            `json:"generation,omitempty"`
}

// ObjectReference names the source of a spec tag, e.g. Kind DockerImage
// with Name "quay.io/org/image:tag".
type ObjectReference struct {
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

// ImageStreamStatus is what OpenShift's registry writes through the status
// subresource when an image is pushed.
type ImageStreamStatus struct {
	// DockerImageRepository is the stream's pull spec in the integrated
	// registry, <registry host>/<namespace>/<stream>.
	DockerImageRepository       string              `json:"dockerImageRepository,omitempty"`
	PublicDockerImageRepository string              `json:"publicDockerImageRepository,omitempty"`
	Tags                        []NamedTagEventList `json:"tags,omitempty"`
}

// NamedTagEventList is one tag's history, newest first: Items[0] is the
// image the tag names now.
type NamedTagEventList struct {
	Tag   string     `json:"tag"`
	Items []TagEvent `json:"items"`
}

// TagEvent is one image a tag has named.
type TagEvent struct {
	// Created is when the tag started naming the image.
	Created time.Time `json:"created"`
	// DockerImageReference is the image's pull spec by digest,
	// <host>/<namespace>/<stream>@sha256:<hex>.
	DockerImageReference string `json:"dockerImageReference"`
	// Image is the image's manifest digest, sha256:<hex>.
	Image      string `json:"image"`
	Generation int64  `json:"generation"`
}
