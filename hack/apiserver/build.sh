#!/usr/bin/env bash
# Builds the real API server that tests run against: etcd and
# k8s.io/apiextensions-apiserver (with discovery turned back on), from the Go
# module proxy at the exact versions pinned in the wrapper modules beside
# this script. Each wrapper has its own go.mod, so the root module never
# sees k8s.io v0.37 or etcd.
#
# Binaries go to $EXPLODEFS_TEST_BIN_DIR (default /var/cache/explodefs-test/bin),
# named after the pinned version and a hash of the wrapper's sources, so a
# second run finds them and returns in well under a second, and a changed pin
# or wrapper builds anew. On success the last lines of stdout are
#   ETCD=<path>
#   APISERVER=<path>
# which the test helper (test/cluster) reads. Progress goes to stderr.
#
# A cold build takes about 4 minutes on 2 cores and ~2.4 GB of Go caches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="${EXPLODEFS_TEST_BIN_DIR:-/var/cache/explodefs-test/bin}"
export PATH="/usr/local/go/bin:$PATH"
# The pinned go directives are satisfied by the installed Go; never fetch a
# toolchain behind our back. -buildvcs=false: the checkout may be a tarball.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

command -v go >/dev/null || { echo "build.sh: go not found (hack/install-go.sh installs it)" >&2; exit 1; }
mkdir -p "$bin_dir"
# Tests of several packages may ask at once; one builds, the others wait
# and then find the binaries.
exec 9>"$bin_dir/.lock"
flock 9

# build NAME WRAPPER_DIR MODULE VAR: prints VAR=<path of the binary>.
build() {
  local name=$1 dir=$here/$2 module=$3 var=$4
  local version key out
  version=$(awk -v m="$module" '{for (i = 1; i < NF; i++) if ($i == m) print $(i+1)}' "$dir/go.mod")
  [ -n "$version" ] || { echo "build.sh: $module is not pinned in $dir/go.mod" >&2; exit 1; }
  key=$(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go | sha256sum | cut -c1-12)
  out="$bin_dir/$name-$version-$key"
  if [ ! -x "$out" ]; then
    echo "build.sh: building $name $version (a cold build takes minutes)" >&2
    local start=$SECONDS
    (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$out.tmp" .)
    mv "$out.tmp" "$out"
    echo "build.sh: built $out in $((SECONDS - start)) s" >&2
    # Older builds of this binary are never used again.
    find "$bin_dir" -maxdepth 1 -name "$name-*" ! -name "$(basename "$out")" -delete
  fi
  echo "$var=$out"
}

build etcd etcd go.etcd.io/etcd/server/v3 ETCD
build apiextensions-apiserver apiextensions k8s.io/apiextensions-apiserver APISERVER
