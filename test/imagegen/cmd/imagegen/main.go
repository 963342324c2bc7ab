// Command imagegen writes the deterministic test images of package imagegen
// into a directory laid out as explodefs expects (ROOT/<namespace>/<stream>),
// for `make run`, benchmarks and manual end-to-end checks.
//
//	imagegen demo DIR      DIR/demo/hello:latest
//	imagegen features DIR  DIR/e2e/features-{gzip,multigzip,tar,zstd,docker}:latest and DIR/e2e/multiarch:latest
//	imagegen bench DIR     DIR/bench/large:latest
//	imagegen bad DIR       DIR/bad/<case>:latest, one stream per bad-input image
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/explodefs/explodefs/test/imagegen"
)

const tag = "latest"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagegen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("imagegen", flag.ContinueOnError)
	seed := flags.Uint64("seed", 1, "PRNG seed; the same seed writes the same digests")
	bigFile := flags.Int64("big-file-size", imagegen.DefaultBigFileSize, "size of the feature image's big file in bytes")
	many := flags.Int("many", imagegen.DefaultManyEntries, "file count of the many-entries image")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: imagegen [flags] demo|features|bench|bad DIR")
		flags.PrintDefaults()
	}
	if len(args) < 2 {
		flags.Usage()
		return fmt.Errorf("need a subcommand and a directory")
	}
	command, root := args[0], args[1]
	if err := flags.Parse(args[2:]); err != nil {
		return err
	}

	switch command {
	case "demo":
		return write(filepath.Join(root, "demo", "hello"), imagegen.DemoImage())
	case "features":
		for _, v := range imagegen.FeatureVariants(imagegen.FeatureOptions{Seed: *seed, BigFileSize: *bigFile}) {
			if err := write(filepath.Join(root, "e2e", v.Name), v.Image); err != nil {
				return err
			}
		}
		return write(filepath.Join(root, "e2e", "multiarch"), imagegen.MultiPlatformImage(*seed))
	case "bench":
		bench := imagegen.BenchImage(imagegen.BenchOptions{Seed: *seed})
		fmt.Printf("bench: %d files, %d dirs, %d content bytes, largest %s (%d bytes)\n",
			bench.Files, bench.Dirs, bench.ContentBytes, bench.LargestFile, bench.LargestFileSize)
		return write(filepath.Join(root, "bench", "large"), bench.Image)
	case "bad":
		for _, bad := range imagegen.BadImages(*many) {
			if err := write(filepath.Join(root, "bad", bad.Name), bad.Image); err != nil {
				return err
			}
		}
		return nil
	}
	flags.Usage()
	return fmt.Errorf("unknown subcommand %q", command)
}

func write(layoutDir string, img imagegen.Image) error {
	start := time.Now()
	d, err := imagegen.WriteImage(layoutDir, tag, img)
	if err != nil {
		return err
	}
	fmt.Printf("%s:%s %s (%.1fs)\n", layoutDir, tag, d, time.Since(start).Seconds())
	return nil
}
