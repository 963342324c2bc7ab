// Package index turns image layer blobs into a queryable description of
// their tar entries and serves the entries' bytes lazily.
//
// It has three parts that follow the data flow:
//   - the layer pass (IndexLayer) reads a blob once, verifies its digest,
//     records every tar entry and the decompression checkpoints of its spans
//     into a Store;
//   - the merged view (BuildView) applies the OCI overlay rules to the
//     entries of an image's layers and yields an immutable inode table;
//   - the lazy reader (Reader) answers reads at an uncompressed offset by
//     inflating only the span that holds it, verifying the span's sha256.
//
// Store is the seam between the index and its storage; the badgerstore and
// memstore subpackages implement it, and indextest holds the conformance
// suite both must pass.
package index
