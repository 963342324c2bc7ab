package mountinfo

import (
	"os"
	"testing"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Entry
		ok   bool
	}{
		{
			line: `812 29 0:61 / /var/lib/explode\040fs/mnt ro,nosuid,nodev,relatime shared:400 - fuse.explodefs explodefs ro,user_id=0,group_id=0,default_permissions,allow_other`,
			want: Entry{Point: "/var/lib/explode fs/mnt", FSType: "fuse.explodefs", Source: "explodefs"},
			ok:   true,
		},
		{
			line: `36 35 98:0 /mnt1 /mnt/a\134b rw,noatime master:1 - ext3 /dev/root rw,errors=continue`,
			want: Entry{Point: `/mnt/a\b`, FSType: "ext3", Source: "/dev/root"},
			ok:   true,
		},
		{line: `garbage`, ok: false},
		{line: `1 2 3:4 / /x rw - fuse`, ok: false},
	} {
		got, ok := ParseLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAtFindsTheRoot(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc/self/mountinfo here")
	}
	ms, err := At("/")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].FSType == "" {
		t.Errorf("At(/) = %+v; want the root mount", ms)
	}
	if ms, err := At("/no/such/mount/point"); err != nil || len(ms) != 0 {
		t.Errorf("At of a path with no mount = %+v, %v", ms, err)
	}
}
