package source_test

import (
	"testing"

	"github.com/explodefs/explodefs/explode/source"
)

func TestNamesMustBeSafePathComponents(t *testing.T) {
	for _, tc := range []struct {
		ns, stream string
		ok         bool
	}{
		{"default", "app", true},
		{"my-ns", "app.v2_x", true},
		{"My-NS", "app", false},
		{"ns", "..", false},
		{"ns", ".", false},
		{"ns", "a/b", false},
		{"", "app", false},
		{"ns", "@sha256:abc", false},
	} {
		if err := source.ValidateNames(tc.ns, tc.stream); (err == nil) != tc.ok {
			t.Errorf("ValidateNames(%q, %q) = %v, want ok=%v", tc.ns, tc.stream, err, tc.ok)
		}
	}
	for tag, ok := range map[string]bool{"latest": true, "v1.2.3-rc_1": true, "@sha256:x": false, "a/b": false, "bad:tag": false, ".hidden": false, "": false} {
		if err := source.ValidateTag(tag); (err == nil) != ok {
			t.Errorf("ValidateTag(%q) = %v, want ok=%v", tag, err, ok)
		}
	}
}
