package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/test/umoci"
)

// materializeTimeout bounds each wait for a commit.
const materializeTimeout = 10 * time.Minute

// commitRounds is how often each commit is timed. Both sides fsync every
// object, and the shared disk makes one commit take 4 s or 10 s, so the
// best of each side is compared.
const commitRounds = 3

// commitFigures times the materialization of the bench image against
// `ostree commit` of its extracted tree, then of the second image, and
// measures sequential reads of the committed bench image (seqFigures).
//
// Neither side drops the page cache: the daemon materializes from layers
// it has just read to index them, and the CLI commits a tree umoci has
// written, so both read from memory and write to disk. Dirty pages are
// written back before either starts, so neither pays for earlier writes.
// Both repositories are bare and fsync their objects (the default on both
// sides).
func commitFigures(c config, bin, work string, imgs ostreeImages, f *ostreeFigures) error {
	rootfs, err := extract(imgs.first, filepath.Join(work, "cli"))
	if err != nil {
		return err
	}
	f.sameTree = true
	for round := range commitRounds {
		took, cliTree, err := cliCommit(rootfs, filepath.Join(work, "cli", fmt.Sprint("repo-", round)))
		if err != nil {
			return err
		}
		logf("baseline: ostree commit --tree=dir of the extracted bench image: %v", took.Round(time.Millisecond))
		first, second, oneFile, tree, err := commitRound(c, bin, filepath.Join(work, fmt.Sprint("commit-", round)), imgs, round == commitRounds-1, f)
		if err != nil {
			return err
		}
		if round == 0 || oneFile < f.oneFile {
			f.oneFile = oneFile
		}
		if round == 0 || took < f.cliCommit {
			f.cliCommit = took
		}
		if round == 0 || first < f.materialize {
			f.materialize = first
		}
		if round == 0 || second < f.second {
			f.second = second
		}
		f.sameTree = f.sameTree && tree == cliTree
	}
	return nil
}

// commitRound runs a daemon on fresh state, publishes the bench image and,
// once it is committed, the second image and then the one-file image, and
// returns how long each took to materialize and the bench image's root
// tree. With seq, it also measures sequential reads before stopping the
// daemon.
func commitRound(c config, bin, dir string, imgs ostreeImages, seq bool, f *ostreeFigures) (first, second, oneFile time.Duration, tree string, err error) {
	src, state, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "state"), filepath.Join(dir, "mnt")
	logPath := filepath.Join(dir, "daemon.log")
	out, err := logTo(logPath)
	if err != nil {
		return 0, 0, 0, "", err
	}
	defer out.Close()
	if err := os.MkdirAll(filepath.Join(src, "bench"), 0o755); err != nil {
		return 0, 0, 0, "", err
	}
	// Info level: the daemon says at start whether passthrough is on.
	d, err := startDaemonTo(out, bin, c.listen, src, state, mnt, "--log-level", "info")
	if err != nil {
		return 0, 0, 0, "", err
	}
	defer d.stop()

	if first, err = publishAndCommit(d, imgs.first, src, "app"); err != nil {
		return 0, 0, 0, "", err
	}
	logf("bench image materialized in %v", first.Round(time.Millisecond))
	repo := filepath.Join(state, "ostree")
	if tree, err = rootTree(repo, tagRef("app")); err != nil {
		return 0, 0, 0, "", err
	}
	if f.repoMode, err = repoMode(repo); err != nil {
		return 0, 0, 0, "", err
	}
	if second, err = publishAndCommit(d, imgs.second, src, "app2"); err != nil {
		return 0, 0, 0, "", err
	}
	logf("second image (shared base layers) materialized in %v", second.Round(time.Millisecond))
	if oneFile, err = publishAndCommit(d, imgs.oneFile, src, "onefile"); err != nil {
		return 0, 0, 0, "", err
	}
	logf("one-file image (shared base layers) materialized in %v", oneFile.Round(time.Millisecond))
	if seq {
		if err := seqFigures(d, mnt, repo, imgs.bench.LargestFile, logPath, f); err != nil {
			return 0, 0, 0, "", err
		}
	}
	return first, second, oneFile, tree, d.stop()
}

// publishAndCommit publishes layout as bench/<stream>:latest and returns
// how long its materialization took.
func publishAndCommit(d *daemon, layout, src, stream string) (time.Duration, error) {
	if err := publish(layout, src, stream); err != nil {
		return 0, err
	}
	img, err := d.waitMaterialization("bench/"+stream+":latest", "done", materializeTimeout)
	if err != nil {
		return 0, err
	}
	return materializeTime(img)
}

// tagRef is the daemon's OSTree ref of bench/<stream>:latest.
func tagRef(stream string) string { return "explodefs/tags/bench/" + stream + "/latest" }

// extract unpacks the bench image with umoci, untimed, and writes the
// tree back to disk, so that committing it is not slowed by its writeback.
func extract(layout, dir string) (string, error) {
	if err := umoci.Available(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rootfs, err := umoci.Unpack(context.Background(), layout, "latest", filepath.Join(dir, "bundle"))
	if err != nil {
		return "", err
	}
	unix.Sync()
	return rootfs, nil
}

// cliCommit times `ostree commit --tree=dir=rootfs` into a fresh bare
// repository and returns the commit's root tree, to check that the
// daemon's commit holds the same tree.
func cliCommit(rootfs, repo string) (time.Duration, string, error) {
	if err := ostreeCmd("init", "--repo="+repo, "--mode=bare"); err != nil {
		return 0, "", err
	}
	unix.Sync()
	start := time.Now()
	if err := ostreeCmd("commit", "--repo="+repo, "--branch=bench", "--tree=dir="+rootfs); err != nil {
		return 0, "", err
	}
	took := time.Since(start)
	tree, err := rootTree(repo, "bench")
	return took, tree, err
}

func ostreeCmd(args ...string) error {
	if out, err := exec.Command("ostree", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ostree %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func ostreeOutput(args ...string) (string, error) {
	out, err := exec.Command("ostree", args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("ostree %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// rootTree returns the checksums of the root directory's tree and
// metadata objects in ref's commit; equal trees give equal checksums,
// whatever the commits' own metadata.
func rootTree(repo, ref string) (string, error) {
	// "d00755 0 0 0 <dirtree> <dirmeta> /"
	out, err := ostreeOutput("ls", "--repo="+repo, "-C", "-d", ref, "/")
	if err != nil {
		return "", err
	}
	fields := strings.Fields(out)
	if len(fields) != 7 {
		return "", fmt.Errorf("ostree ls of / in %s %s: unexpected %q", repo, ref, out)
	}
	return fields[4] + " " + fields[5], nil
}

// objectPath returns the object file that holds the bytes of file p in
// ref's commit.
func objectPath(repo, ref, p string) (string, error) {
	// "-00644 0 0 41943040 <checksum> /opt/app/data/model.bin"
	out, err := ostreeOutput("ls", "--repo="+repo, "-C", ref, p)
	if err != nil {
		return "", err
	}
	fields := strings.Fields(out)
	if len(fields) != 6 || len(fields[4]) != 64 {
		return "", fmt.Errorf("ostree ls of %s in %s %s: unexpected %q", p, repo, ref, out)
	}
	sum := fields[4]
	return filepath.Join(repo, "objects", sum[:2], sum[2:]+".file"), nil
}

func repoMode(repo string) (string, error) {
	return ostreeOutput("config", "--repo="+repo, "get", "core.mode")
}
