package imagegen

import "encoding/binary"

// Linux file capability encoding (include/uapi/linux/capability.h).
const (
	vfsCapRevision2      = 0x02000000
	vfsCapFlagsEffective = 0x000001
	vfsCapV2Size         = 20 // magic_etc + 2 × {permitted, inheritable}
	capNetBindService    = 10
)

// NetBindServiceCapability is the security.capability xattr value that
// `setcap cap_net_bind_service=ep` stores: a little-endian vfs_cap_data
// revision 2 with the effective flag, cap_net_bind_service permitted, and
// nothing inheritable. Built by hand so the tests need no libcap.
func NetBindServiceCapability() []byte {
	b := make([]byte, vfsCapV2Size)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagsEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<capNetBindService) // permitted, low word
	// Inheritable low, permitted high and inheritable high stay zero.
	return b
}
