// Package umoci runs `umoci unpack`, the reference extractor that the
// explodefs end-to-end tests compare mounted images against.
//
// What umoci 0.4.7 (Debian's package) does, as checked by this package's
// tests against imagegen's images:
//   - OCI manifests with gzip (single- or multi-member) and uncompressed
//     tar layers: supported, and both give identical trees.
//   - zstd layers (application/vnd.oci.image.layer.v1.tar+zstd): refused
//     ("blob is not correct mediatype"); compare zstd images against the
//     gzip variant's extraction instead.
//   - Docker schema 2 manifests: refused ("descriptor does not point to
//     ispec.MediaTypeImageManifest"); compare against the OCI variant.
//   - A tag naming an image index with several platforms: refused ("tag is
//     ambiguous"); compare against the host platform's manifest written
//     under its own tag.
//   - Whiteouts and opaque markers: applied to lower layers only, wherever
//     the marker sits in its layer.
//   - mtimes, with nanoseconds, of files, directories and symlinks:
//     restored. Directories that exist only as parents of other entries get
//     mode 0755 (umask) and the extraction time, and creating one inside a
//     declared directory also resets that directory's mtime.
//   - xattrs from SCHILY.xattr PAX records, security.capability included:
//     restored, also on directories.
//   - Entries naming paths outside the root are cleaned into the root, and
//     an entry below a symlink is written where the symlink resolves inside
//     the root (link -> ../../etc plus link/passwd yields etc/passwd), which
//     is not what explodefs should do; do not use umoci as the reference for
//     imagegen.EscapingPaths.
//   - Paths longer than PATH_MAX fail with ENAMETOOLONG; hard links to
//     missing targets fail; digest mismatches and truncated layers fail.
package umoci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binary is the executable Unpack runs.
const Binary = "umoci"

// maxErrorOutput bounds how much of umoci's output an error carries; the
// deep-path image makes umoci print kilobytes of path.
const maxErrorOutput = 2000

// Unpack runs `umoci unpack --image <layoutDir>:<tag> <bundleDir>` and
// returns the unpacked root filesystem, bundleDir/rootfs. bundleDir must
// not exist or be empty. It must run as root: umoci then restores owners,
// device nodes and security.* xattrs exactly, which --rootless cannot.
func Unpack(ctx context.Context, layoutDir, tag, bundleDir string) (string, error) {
	if strings.Contains(layoutDir, ":") {
		// umoci splits --image at the colon, so the path cannot hold one.
		return "", fmt.Errorf("umoci unpack %s: layout path contains ':'", layoutDir)
	}
	cmd := exec.CommandContext(ctx, Binary, "unpack", "--image", layoutDir+":"+tag, bundleDir)
	output, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("umoci unpack %s:%s: %w: %s", layoutDir, tag, err, abbreviate(output))
	}
	return filepath.Join(bundleDir, "rootfs"), nil
}

// abbreviate keeps the start and end of long output, where umoci's message
// and the failing operation are.
func abbreviate(output []byte) string {
	output = bytes.TrimSpace(output)
	if len(output) <= maxErrorOutput {
		return string(output)
	}
	half := maxErrorOutput / 2
	return fmt.Sprintf("%s [... %d bytes ...] %s", output[:half], len(output)-maxErrorOutput, output[len(output)-half:])
}

// Available reports why Unpack cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("%s not installed (apt-get install -y umoci): %w", Binary, err)
	}
	if os.Geteuid() != 0 {
		return errors.New("umoci reference extraction needs root to restore owners, devices and security xattrs")
	}
	return nil
}

// Require stops the test when Unpack cannot run: it fails under CI
// (CI=true), where the reference must be there, and skips elsewhere.
func Require(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("reference extraction unavailable in CI: %v", err)
	}
	t.Skipf("skipping: %v", err)
}
