// Package procself reads the test process's own resident set and open
// descriptors from /proc, for tests that check a long-running path leaks
// neither.
package procself

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// RSSKiB returns the process's resident set in KiB.
func RSSKiB() (int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("/proc/self/status has no VmRSS")
}

// OpenFiles lists what the process's descriptors point at, at the quietest
// of a few looks 10 ms apart: background work may hold a descriptor for a
// moment (a directory being listed), which is not a leak.
func OpenFiles() ([]string, error) {
	var least []string
	for i := range 20 {
		got, err := openFilesNow()
		if err != nil {
			return nil, err
		}
		if i == 0 || len(got) < len(least) {
			least = got
		}
		time.Sleep(10 * time.Millisecond)
	}
	return least, nil
}

func openFilesNow() ([]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" -> "+target)
	}
	return out, nil
}
