// Package mountinfo reads proc(5)'s /proc/self/mountinfo: which mounts
// this process's mount namespace has at a path, as the kernel sees them
// rather than as a directory listing looks. The daemon uses it to find a
// stale mount of its own at start; tests use it to see a mount come and go.
package mountinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Entry is one mount.
type Entry struct {
	Point, FSType, Source string
}

// ParseLine reads one line of mountinfo:
// "id parent maj:min root mountpoint options [optional...] - fstype source superoptions".
func ParseLine(line string) (Entry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(fields) {
		return Entry{}, false
	}
	return Entry{
		Point:  Unescape(fields[4]),
		FSType: fields[sep+1],
		Source: Unescape(fields[sep+2]),
	}, true
}

// At lists the mounts at path, bottom first.
func At(path string) ([]Entry, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	var found []Entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := ParseLine(sc.Text()); ok && e.Point == path {
			found = append(found, e)
		}
	}
	return found, sc.Err()
}

// Unescape undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in mountinfo fields.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
