package imagegen

import (
	"archive/tar"
	"fmt"
	"iter"
	"time"
)

// ManyFilesImage is one gzip layer of dirs directories holding filesPerDir
// empty files each. With 1,000 × 1,000 it is the image that measures what
// an image view costs the daemon per entry: nearly all of its bytes are
// headers, so the layer pass is quick and the merged view is what remains.
// Headers are USTAR with whole-second mtimes, the smallest encoding, so
// that a million entries stay near 0.5 GB of tar.
func ManyFilesImage(dirs, filesPerDir int) Image {
	layer := Layer{Compression: Gzip, Entries: manyFiles(dirs, filesPerDir), CreatedBy: "many empty files"}
	return SingleImage(layer)
}

// ManyFilesPath is the path of the last file ManyFilesImage writes: once it
// is readable the whole image is shown.
func ManyFilesPath(dirs, filesPerDir int) string {
	return manyFilesName(dirs-1, filesPerDir-1)
}

func manyFilesName(dir, file int) string { return fmt.Sprintf("dir%04d/file%04d", dir, file) }

// manyFiles yields the entries on the fly: a million headers held in
// memory would cost more than the tar does.
func manyFiles(dirs, filesPerDir int) iter.Seq[Entry] {
	mtime := BaseTime().Truncate(time.Second)
	return func(yield func(Entry) bool) {
		for d := range dirs {
			dir := Dir(fmt.Sprintf("dir%04d", d), 0o755).InFormat(tar.FormatUSTAR).At(mtime)
			if !yield(dir) {
				return
			}
			for f := range filesPerDir {
				file := File(manyFilesName(d, f), 0o644, nil).InFormat(tar.FormatUSTAR).At(mtime)
				if !yield(file) {
					return
				}
			}
		}
	}
}
