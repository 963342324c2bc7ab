// Package zran makes gzip layer blobs randomly readable.
//
// A gzip stream can normally only be decompressed from its start. While an
// Indexer decompresses a blob once, front to back, it reports checkpoints:
// places where inflation can restart, together with the state needed to do so
// (the bit position and the last 32 KiB of output, which deflate may refer
// back to). NewReader later resumes decompression at any checkpoint, so a read
// at uncompressed offset X only inflates from the nearest checkpoint at or
// before X. The technique is the one of zlib's examples/zran.c.
//
// This is the project's only user of zlib and ISA-L (which inflates for
// readers, faster than zlib): the rest of explodefs sees plain io.Readers
// and Checkpoint values.
package zran

// Checkpoint is a place in a gzip stream where inflation can restart.
//
// There are two kinds. A member-start checkpoint (MemberStart) sits on the
// first byte of a gzip member header; restarting there is ordinary gzip
// decoding and needs no other state. Any other checkpoint sits on a deflate
// block boundary inside a member; restarting there means raw-inflating from
// that bit position with Window as the preset dictionary.
type Checkpoint struct {
	// Out is the offset in the uncompressed stream (all gzip members
	// concatenated) at which the checkpoint's output starts.
	Out int64
	// In is the offset in the compressed blob of the first byte that is not
	// yet consumed at all. When Bits is 0 the restart reads from In; see Bits
	// otherwise.
	In int64
	// Bits is 0..7: how many bits of byte In-1 are still unconsumed. Deflate
	// consumes bits from the least significant end, so they are the top Bits
	// bits of that byte: a restart reads byte In-1, primes the inflater with
	// byte>>(8-Bits) (Bits bits), then continues from In. Always 0 when
	// MemberStart.
	Bits uint8
	// Window is the uncompressed data just before Out that later data may
	// refer to: the last WindowSize bytes, or all output since the start of
	// the current gzip member when that is shorter. Empty when MemberStart.
	Window []byte
	// MemberStart is true when In is the offset of a gzip member header
	// (the 0x1f 0x8b magic).
	MemberStart bool
}
