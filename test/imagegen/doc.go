// Package imagegen writes OCI image layouts for explodefs tests, byte for
// byte deterministically: every piece of content comes from a seeded PRNG,
// every mtime is fixed, and nothing is fetched from the network.
//
// An Image is described as manifests of layers, and a Layer as an ordered
// sequence of tar entries (a tar.Header plus Content). Content can be literal
// bytes or a generator, so multi-hundred-megabyte layers are streamed to disk
// while their digests are computed, never held in memory.
//
// WriteImage adds an image under a tag to a layout directory (creating the
// layout when needed) and RemoveTag takes a tag away again. index.json is
// always replaced atomically because the explodefs daemon watches it.
//
// The predefined images cover the cases the end-to-end tests need:
// FeatureImage exercises every tar and overlay feature in several
// compressions, DemoImage is the small image behind `make run`, BenchImage
// is a realistic large image for benchmarks, and the Bad* constructors build
// malformed or hostile images that a correct implementation must refuse or
// sanitize.
package imagegen
