package imagegen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"time"
)

// BenchOptions parameterises BenchImage. Zero values pick the defaults that
// give ~365 MB of tar in ~9,000 files.
type BenchOptions struct {
	Seed uint64
	// Files is the number of ordinary (non-large) regular files.
	Files int
	// LargeFileSizes are the sizes of the few large files of the app layer.
	LargeFileSizes []int64
}

// Bench is the benchmark image with the numbers a benchmark reports.
type Bench struct {
	Image           Image
	Files           int   // regular files, large ones included
	Dirs            int   // directory entries
	ContentBytes    int64 // sum of regular file sizes (the tar is slightly larger)
	LargestFile     string
	LargestFileSize int64
}

// benchArea is one part of a realistic filesystem: where its files live,
// how many there are, what they contain and how big they get.
type benchArea struct {
	layer         int
	root          string
	weight        int // share of BenchOptions.Files
	dirs          int // directories to spread the files over
	binary        bool
	randomPercent int // for binary content
	minSize       int64
	maxSize       int64
	mode          int64
	ext           string
}

func benchAreas() []benchArea {
	return []benchArea{
		{layer: 0, root: "etc", weight: 4, dirs: 40, minSize: 100, maxSize: 8 << 10, mode: 0o644, ext: ".conf"},
		{layer: 0, root: "usr/bin", weight: 6, dirs: 1, binary: true, randomPercent: 35, minSize: 8 << 10, maxSize: 300 << 10, mode: 0o755},
		{layer: 0, root: "usr/lib/x86_64-linux-gnu", weight: 9, dirs: 60, binary: true, randomPercent: 30, minSize: 4 << 10, maxSize: 400 << 10, mode: 0o644, ext: ".so.1"},
		{layer: 0, root: "usr/share/doc", weight: 14, dirs: 400, minSize: 200, maxSize: 40 << 10, mode: 0o644},
		{layer: 0, root: "var/lib/dpkg/info", weight: 8, dirs: 1, minSize: 100, maxSize: 20 << 10, mode: 0o644, ext: ".list"},
		{layer: 1, root: "usr/lib/python3/dist-packages", weight: 30, dirs: 500, minSize: 300, maxSize: 200 << 10, mode: 0o644, ext: ".py"},
		{layer: 1, root: "usr/include", weight: 10, dirs: 80, minSize: 500, maxSize: 60 << 10, mode: 0o644, ext: ".h"},
		{layer: 1, root: "usr/share/locale", weight: 6, dirs: 120, binary: true, randomPercent: 20, minSize: 1 << 10, maxSize: 80 << 10, mode: 0o644, ext: ".mo"},
		{layer: 2, root: "opt/app/src", weight: 8, dirs: 90, minSize: 500, maxSize: 50 << 10, mode: 0o644, ext: ".go"},
		{layer: 2, root: "opt/app/static", weight: 5, dirs: 30, binary: true, randomPercent: 60, minSize: 2 << 10, maxSize: 300 << 10, mode: 0o644, ext: ".png"},
	}
}

// largeFileNames go to the app layer with alternating content kinds.
func largeFileNames() []string {
	return []string{"opt/app/data/model.bin", "opt/app/data/corpus.txt", "opt/app/data/archive.dat", "opt/app/data/extra.bin"}
}

// BenchImage is a three-layer gzip image of roughly an OS base, a language
// runtime and an application, with realistic sizes and compressibility
// (overall gzip ratio around 3).
func BenchImage(opts BenchOptions) Bench {
	if opts.Files == 0 {
		opts.Files = 9000
	}
	if opts.LargeFileSizes == nil {
		opts.LargeFileSizes = []int64{40 << 20, 32 << 20, 24 << 20}
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0xbe7c4))
	dictionary := words()
	areas := benchAreas()
	totalWeight := 0
	for _, a := range areas {
		totalWeight += a.weight
	}

	var bench Bench
	layers := make([][]Entry, 3)
	dirsSeen := map[string]bool{}
	addDirs := func(layer int, dir string) {
		for d := dir; d != "." && d != "/" && !dirsSeen[d]; d = path.Dir(d) {
			dirsSeen[d] = true
			layers[layer] = append(layers[layer], Dir(d, 0o755))
			bench.Dirs++
		}
	}
	addFile := func(layer int, name string, mode int64, content Content) {
		addDirs(layer, path.Dir(name))
		layers[layer] = append(layers[layer], File(name, mode, content))
		bench.Files++
		bench.ContentBytes += content.Size()
		if content.Size() > bench.LargestFileSize {
			bench.LargestFile, bench.LargestFileSize = name, content.Size()
		}
	}

	fileSeed := opts.Seed << 32
	for _, area := range areas {
		dirs := benchDirs(rng, dictionary, area)
		count := opts.Files * area.weight / totalWeight
		for i := range count {
			fileSeed++
			name := fmt.Sprintf("%s/%s-%d%s", dirs[rng.IntN(len(dirs))], pick(rng, dictionary), i, area.ext)
			addFile(area.layer, name, area.mode, benchContent(rng, area, fileSeed))
		}
	}
	for i, size := range opts.LargeFileSizes {
		name := largeFileNames()[i%len(largeFileNames())]
		if i >= len(largeFileNames()) {
			name = fmt.Sprintf("%s.%d", name, i)
		}
		var content Content = Text(opts.Seed+uint64(i), size)
		if i%2 == 0 {
			content = Binary(opts.Seed+uint64(i), size, 35)
		}
		addFile(2, name, 0o644, content)
	}

	names := []string{"os base", "language runtime", "application"}
	manifest := Manifest{}
	for i, entries := range layers {
		// Parents before children, as tar producers emit them.
		slices.SortStableFunc(entries, func(a, b Entry) int {
			return strings.Compare(a.Header.Name, b.Header.Name)
		})
		base := BaseTime().Add(time.Duration(i) * 24 * time.Hour)
		for j := range entries {
			entries[j].Header.ModTime = base.Add(time.Duration(j) * time.Second)
		}
		manifest.Layers = append(manifest.Layers, Layer{Compression: Gzip, Entries: Entries(entries...), CreatedBy: names[i]})
	}
	bench.Image = Image{Manifests: []Manifest{manifest}}
	return bench
}

// benchDirs invents area.dirs directory paths, one to three levels below
// the area root.
func benchDirs(rng *rand.Rand, dictionary []string, area benchArea) []string {
	if area.dirs == 1 {
		return []string{area.root}
	}
	dirs := make([]string, area.dirs)
	for i := range dirs {
		d := fmt.Sprintf("%s/%s-%s-%d", area.root, pick(rng, dictionary), pick(rng, dictionary), i)
		for depth := rng.IntN(3); depth > 0; depth-- {
			d += "/" + pick(rng, dictionary)
		}
		dirs[i] = d
	}
	return dirs
}

// benchContent draws a log-uniform size: most files small, a few big, as
// on real systems.
func benchContent(rng *rand.Rand, area benchArea, seed uint64) Content {
	logMin, logMax := math.Log(float64(area.minSize)), math.Log(float64(area.maxSize))
	size := int64(math.Exp(logMin + rng.Float64()*(logMax-logMin)))
	if area.binary {
		return Binary(seed, size, area.randomPercent)
	}
	return Text(seed, size)
}

func pick(rng *rand.Rand, dictionary []string) string { return dictionary[rng.IntN(len(dictionary))] }
