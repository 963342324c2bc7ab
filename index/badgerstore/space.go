package badgerstore

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Badger writes its write-ahead logs and its tables through memory maps of
// sparse files. When the filesystem is full, the page fault of such a
// write cannot allocate a block and the kernel sends SIGBUS, which the Go
// runtime turns into a fatal "unexpected fault address": the whole daemon
// dies, whatever goroutine was writing, and a recover cannot help. Badger
// never sees ENOSPC. So the store refuses to write while the filesystem has
// less free space than Badger can still fill with its memory-mapped files
// before the next check: the write-ahead log of every memtable, the table
// a flush writes, and the tables a level-0 compaction writes before it
// deletes its inputs.

// reserveMemtables is the reserve in memtables: NumMemtables logs, one
// more that rotation opens, one table being flushed, and up to
// NumLevelZeroTables tables rewritten by a compaction, rounded up.
const reserveMemtables = 10

// spaceCheckBytes is how many record bytes a writer adds between checks;
// every concurrent pass may write that much beyond the last check, which
// the reserve absorbs.
const spaceCheckBytes = 1 << 20

// WithFreeSpaceReserve sets the free space, in bytes, below which the
// store refuses to write to its filesystem. The default is ten memtables
// (160 MiB), which covers what Badger may write through its memory maps
// between two checks. Deleting a layer is refused only below a quarter
// of it.
func WithFreeSpaceReserve(bytes int64) Option {
	return func(c *config) { c.reserve = bytes }
}

// spaceGuard checks the free space of the database's filesystem.
type spaceGuard struct {
	dir     string
	reserve uint64
}

// check fails with an error wrapping ENOSPC when the filesystem has less
// than need bytes free, for a user who is about to write.
func (g spaceGuard) check(need uint64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return fmt.Errorf("checking the free space of %s: %w", g.dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	if free < need {
		return fmt.Errorf("%s has %s free, less than the %s the index keeps free so that Badger never fills the disk through its memory maps (which would crash the daemon): %w",
			g.dir, size(free), size(need), syscall.ENOSPC)
	}
	return nil
}

// forWrite checks before a new layer's records are written.
func (g spaceGuard) forWrite() error { return g.check(g.reserve) }

// forDelete checks before deleting a layer. A deletion writes only small
// tombstones, so it may go further into the reserve than a pass: a
// damaged layer can still be dropped while new passes are refused.
func (g spaceGuard) forDelete() error { return g.check(g.reserve / 4) }

func size(n uint64) string {
	if n >= 10<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
