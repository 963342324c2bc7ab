package badgerstore_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

// dirtyLogPages returns the kB of pages of Badger's memory-mapped logs in
// dir (memtable write-ahead logs and value logs) that were written and not
// yet synced: what a power loss would lose.
func dirtyLogPages(t *testing.T, dir string) (dirtyKB int, logs []string) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	inLog := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header line
			path := fields[len(fields)-1]
			inLog = len(fields) >= 6 && filepath.Dir(path) == dir && (strings.HasSuffix(path, ".mem") || strings.HasSuffix(path, ".vlog"))
			if inLog {
				logs = append(logs, filepath.Base(path))
			}
			continue
		}
		if inLog && (fields[0] == "Shared_Dirty:" || fields[0] == "Private_Dirty:") {
			kb, _ := strconv.Atoi(fields[1])
			dirtyKB += kb
		}
	}
	return dirtyKB, logs
}

// The completion marker of a layer must be written only once every record
// of the layer is durable. Badger's DB.Sync syncs the active memtable's log
// only; the logs of memtables rotated out during the pass stay unsynced
// until they are flushed to tables. Here flushes are held back (no
// compactors, and level 0 stalls at two tables), so those logs are still
// there when the marker is about to be written, and none of their pages
// may be dirty. Held-back flushes never end, so Close would wait forever:
// the check runs in a child process, which exits without closing.
func TestRecordsAreDurableBeforeTheMarker(t *testing.T) {
	if os.Getenv(durabilityChild) != "" {
		checkRecordsDurableBeforeMarker(t, os.Getenv(durabilityChild))
		return
	}
	if fs := fsType(t, os.TempDir()); fs == "tmpfs" {
		// tmpfs pages stay dirty forever; there is no disk to sync to.
		msg := os.TempDir() + " is tmpfs; this test needs a disk-backed filesystem (set TMPDIR)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecordsAreDurableBeforeTheMarker$", "-test.v")
	cmd.Env = append(os.Environ(), durabilityChild+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), durabilityChecked) {
		t.Errorf("child: %v\n%s", err, out)
	}
}

const (
	durabilityChild   = "BADGERSTORE_DURABILITY_DIR"
	durabilityChecked = "checked the logs before the marker"
)

func checkRecordsDurableBeforeMarker(t *testing.T, dir string) {
	s, err := badgerstore.Open(dir, badgerstore.WithBadgerOptionsForTest(func(o *badger.Options) {
		o.MemTableSize = 1 << 20
		o.ValueThreshold = 64 << 10
		o.NumMemtables = 16
		o.NumCompactors = 0
		o.NumLevelZeroTables = 1
		o.NumLevelZeroTablesStall = 2
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checks := 0
	s.SetBeforeMarkerForTest(func(d digest.Digest) error {
		checks++
		dirty, logs := dirtyLogPages(t, dir)
		if len(logs) < 3 {
			t.Errorf("layer %s: %d memtable logs at commit (%v); the test needs rotated ones", d, len(logs), logs)
		}
		if dirty > 0 {
			t.Errorf("layer %s: %d kB of its memtable logs %v not synced when its completion marker is written", d, dirty, logs)
		}
		return nil
	})
	d := indextest.LayerDigest(1)
	w, err := s.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range indextest.SampleEntries(30000) {
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(index.LayerInfo{}); err != nil {
		t.Fatal(err)
	}
	if checks != 1 {
		t.Fatalf("the check ran %d times", checks)
	}
	if !t.Failed() {
		t.Log(durabilityChecked)
	}
}

func fsType(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	best, typ := "", ""
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(dir, f[1]) && len(f[1]) > len(best) {
			best, typ = f[1], f[2]
		}
	}
	return typ
}
