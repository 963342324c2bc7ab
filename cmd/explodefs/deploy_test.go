package main

import (
	"bytes"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// The systemd unit starts the daemon with flags the serve command has,
// with values it accepts: the unit cannot drift from the code.
func TestSystemdUnitFlags(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/systemd/explodefs.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec string
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart="); ok {
			exec = v
		}
	}
	args := strings.Fields(exec)
	if len(args) < 2 || args[1] != "serve" {
		t.Fatalf("ExecStart=%q does not run explodefs serve", exec)
	}
	cmd := newServeCommand()
	if err := cmd.Flags().Parse(args[2:]); err != nil {
		t.Fatalf("the unit's flags do not parse: %v", err)
	}
	for _, name := range []string{"source", "mountpoint", "state-dir", "shutdown-timeout"} {
		if !cmd.Flags().Changed(name) {
			t.Errorf("the unit does not set --%s", name)
		}
	}
	if _, err := newSource(cmd.Flags().Lookup("source").Value.String(), serveConfig{}, nil, nil); err != nil {
		t.Errorf("the unit's source: %v", err)
	}
}

func TestPrintVersion(t *testing.T) {
	var out bytes.Buffer
	printVersion(&out, &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"}}})
	if got := out.String(); !strings.Contains(got, "commit: unknown (built outside a git checkout)") || !strings.Contains(got, "go: go1.26.8 linux/amd64") {
		t.Errorf("version without VCS information:\n%s", got)
	}
	out.Reset()
	printVersion(&out, &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}})
	if !strings.Contains(out.String(), "commit: abc123 (modified)") {
		t.Errorf("version with VCS information:\n%s", out.String())
	}
}
