package fs

import (
	"runtime"
	"sync"
	"weak"
)

// imageTable finds an image by its serial for the requests that imageFS
// answers, which name an inode by number only.
//
// An image must stay readable for as long as the kernel holds any of its
// inodes, also after the catalog dropped it. Three things hold it: the
// catalog, the go-fuse node of its root while the kernel holds the root,
// and the table itself while the kernel holds inodes below the root (their
// lookups, counted here, not yet forgotten). The table otherwise refers to
// the image weakly, and forgets the serial once the image is collected.
//
// The kernel's dentries pin their parents, so the root alone would keep
// the image in every case seen; the count costs one integer per image and
// does not rely on that, nor on the order in which FORGETs are handled.
type imageTable struct {
	mu    sync.RWMutex
	slots map[uint64]*imageSlot
}

// imageSlot is what the table knows of one image.
type imageSlot struct {
	image weak.Pointer[image]
	// lookups counts the kernel's references to inodes below the root:
	// one per entry of a LOOKUP or READDIRPLUS reply, less what FORGET
	// gave back. held keeps the image while it is above zero.
	lookups uint64
	held    *image
}

func newImageTable() *imageTable {
	return &imageTable{slots: map[uint64]*imageSlot{}}
}

// add makes img findable by its serial.
func (t *imageTable) add(img *image) {
	t.mu.Lock()
	t.slots[img.serial] = &imageSlot{image: weak.Make(img)}
	t.mu.Unlock()
	runtime.AddCleanup(img, t.dropCollected, img.serial)
}

// get returns the image of serial, or nil when nothing holds it any more.
func (t *imageTable) get(serial uint64) *image {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := t.slots[serial]
	if s == nil {
		return nil
	}
	if s.held != nil {
		return s.held
	}
	return s.image.Value()
}

// hold records n more kernel references to inodes below img's root.
func (t *imageTable) hold(img *image, n uint64) {
	if n == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.slots[img.serial]
	if s == nil {
		// Not reachable: the image is in hand, so its cleanup has not
		// run. Keep it anyway rather than lose track of the lookups.
		s = &imageSlot{image: weak.Make(img)}
		t.slots[img.serial] = s
	}
	s.lookups += n
	s.held = img
}

// release gives back n kernel references to inodes below the root of the
// image with this serial (a FORGET).
func (t *imageTable) release(serial, n uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.slots[serial]
	if s == nil {
		return
	}
	s.lookups -= min(n, s.lookups)
	if s.lookups == 0 {
		s.held = nil
	}
}

// lookups returns the kernel references counted for the image of serial.
func (t *imageTable) lookups(serial uint64) uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if s := t.slots[serial]; s != nil {
		return s.lookups
	}
	return 0
}

// dropCollected forgets a serial whose image was collected.
func (t *imageTable) dropCollected(serial uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.slots[serial]; s != nil && s.held == nil && s.image.Value() == nil {
		delete(t.slots, serial)
	}
}
