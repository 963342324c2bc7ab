package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
)

// A zstd layer of a few KiB whose frame declares a 512 MiB window and then
// fills it with 640 MiB of zeros: a decoder that honours the window holds
// 512 MiB per pass. The daemon refuses it with a reason, stays small, and
// serves the other image.
func TestZstdWindowBomb(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	src, mnt, state := filepath.Join(dir, "src"), filepath.Join(dir, "mnt"), filepath.Join(dir, "state")
	bin := buildDaemon(t, dir)

	const window, zeros = 512 << 20, 640 << 20
	_, bombLayer, err := imagegen.WriteZstdWindowBomb(filepath.Join(src, "res", "zstd-bomb"), "latest", window, zeros)
	if err != nil {
		t.Fatal(err)
	}
	good := imagegen.SingleImage(imagegen.Layer{Compression: imagegen.Zstd, Entries: imagegen.Entries(
		imagegen.File("README", 0o644, imagegen.String("served next to a window bomb\n")))})
	write(t, filepath.Join(src, "res", "good"), good)

	d := newDaemon(t, bin, src, mnt, state)
	d.start()
	refs := []string{"res/zstd-bomb:latest", "res/good:latest"}
	d.settle(refs, 3*time.Minute)

	bomb, _ := d.image("res/zstd-bomb:latest")
	if bomb.State != status.Failed {
		t.Errorf("window bomb: %s, want failed", bomb.State)
	}
	for _, want := range []string{"window", "512 MiB", bombLayer.String()} {
		if !strings.Contains(bomb.Reason, want) {
			t.Errorf("window bomb's reason %q does not say %q", bomb.Reason, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(mnt, "res", "zstd-bomb", "latest")); err == nil {
		t.Error("the window bomb's tag is visible")
	}
	raw, err := os.ReadFile(filepath.Join(mnt, "res", "good", "latest", "README"))
	if err != nil || string(raw) != "served next to a window bomb\n" {
		t.Errorf("the other image: %q, %v", raw, err)
	}
	// No decompressed copy of the bomb is kept, whole or partial.
	copies, _ := filepath.Glob(filepath.Join(state, "cache", bombLayer.Encoded()+"*"))
	if len(copies) != 0 {
		t.Errorf("decompressed copies of the bomb left in the state directory: %v", copies)
	}

	peak := peakRSS(t, d.cmd.Process.Pid)
	t.Logf("daemon peak RSS (VmHWM): %d MiB; the bomb asks for a %d MiB window", peak>>20, window>>20)
	if peak > window/4 {
		t.Errorf("daemon peak RSS %d MiB, want well below the bomb's %d MiB window", peak>>20, window>>20)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[0] == "VmHWM:" && fields[2] == "kB" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
