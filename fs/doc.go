// Package fs serves explodefs's read-only FUSE tree: a catalog of
// namespaces, image streams and tags on top, and below each stream one
// directory per image that shows the image's merged root filesystem.
//
//	<mount>/<namespace>/<stream>/<tag>             symlink to @sha256:<hex>
//	<mount>/<namespace>/<stream>/@sha256:<hex>/    the image's root filesystem
//
// The package holds go-fuse nodes and nothing else: the catalog's nodes and
// each image's root; the inodes below an image root are answered straight
// from the view by number (imageFS), so the daemon keeps nothing per inode
// the kernel caches. What an image contains comes from an *index.View; the
// bytes of its files come from a ContentReader or, once the image is
// materialized on local disk, from a Backer's files, which the kernel then
// reads without asking the daemon (FUSE passthrough). The catalog changes
// through Root.SetStream and Root.RemoveStream while the mount is live;
// image content never changes, so the kernel may cache it for long.
package fs
