package main

import (
	"strings"
	"testing"
)

// Every flag has an EXPLODEFS_ variable; os-explode's variables keep their
// meaning after it; a flag on the command line wins over both.
func TestEnvPrecedence(t *testing.T) {
	cmd := newServeCommand()
	t.Setenv("OS_WATCH_NAMESPACE", "from-os-explode")
	t.Setenv("OS_IMAGE_BLOB_SOURCE", "file:///legacy")
	t.Setenv("EXPLODEFS_BLOB_SOURCE", "file:///ours")
	t.Setenv("EXPLODEFS_HISTORY_DEPTH", "3")
	t.Setenv("OS_WATCH_INSECURE", "true")
	if err := cmd.Flags().Parse([]string{"--history-depth", "5"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	for name, want := range map[string]string{
		"namespace":     "from-os-explode",
		"blob-source":   "file:///ours",
		"history-depth": "5",
		"api-insecure":  "true",
	} {
		if got := get(name); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	if usage := cmd.Flags().Lookup("namespace").Usage; !strings.Contains(usage, "$OS_WATCH_NAMESPACE") {
		t.Errorf("help of --namespace does not name OS_WATCH_NAMESPACE: %q", usage)
	}
}

// A bad value in a variable is an error naming the variable and the flag.
func TestEnvBadValue(t *testing.T) {
	cmd := newServeCommand()
	t.Setenv("OS_WATCH_INSECURE", "maybe")
	if err := applyEnv(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "$OS_WATCH_INSECURE") || !strings.Contains(err.Error(), "--api-insecure") {
		t.Errorf("bad boolean in the environment: %v", err)
	}
}
