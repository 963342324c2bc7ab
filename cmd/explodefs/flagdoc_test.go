package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the README's flag tables from the code")

// TestREADMEFlagTables checks every command's flag table in the README
// against the flags the code defines. Run with -update to rewrite them.
func TestREADMEFlagTables(t *testing.T) {
	const readme = "../../README.md"
	raw, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for name, cmd := range map[string]*cobra.Command{
		"serve": newServeCommand(), "status": newStatusCommand(), "checkout": newCheckoutCommand(), "gc": newGCCommand(),
	} {
		begin, end := "<!-- flags:"+name+" -->\n", "<!-- /flags:"+name+" -->"
		i, j := strings.Index(text, begin), strings.Index(text, end)
		if i < 0 || j < i {
			t.Errorf("README has no table of %s's flags between %q and %q", name, begin, end)
			continue
		}
		want := flagTable(cmd.Flags())
		if got := text[i+len(begin) : j]; got != want {
			if *update {
				text = text[:i+len(begin)] + want + text[j:]
				continue
			}
			t.Errorf("README's flags of %s differ from the code; run go test ./cmd/explodefs -run TestREADMEFlagTables -update\nwant:\n%s", name, want)
		}
	}
	if *update {
		if err := os.WriteFile(readme, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
