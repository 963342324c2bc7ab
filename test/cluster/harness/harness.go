// Package harness holds what the real test components (the API server in
// test/cluster, the registry in test/registry) share: a test CA, child
// processes tied to the test that started them, free loopback ports and the
// rule for a missing dependency (fail under CI, skip elsewhere).
package harness

import (
	"fmt"
	"net"
	"os"
	"testing"
)

// Require stops the test when err says a dependency is missing: under CI
// (CI=true) every piece must be there, so the test fails; elsewhere it is
// skipped with install, which says what to install.
func Require(t testing.TB, err error, install string) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (%s)", err, install)
	}
	t.Skipf("skipping: %v (%s)", err, install)
}

// FreePort returns a loopback TCP port that was free a moment ago. A child
// process binds it right after; the kernel hands out ephemeral ports in
// turn, so parallel runs do not get the same one back in that window.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
