#!/usr/bin/env bash
# Installs what building, running and testing explodefs needs on Debian 12,
# as root. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  gcc libc6-dev zlib1g-dev   # cgo: zlib checkpoints
  libostree-dev              # cgo: the OSTree materializer
  ostree runc                # tests: checkouts, fsck and running images
  podman debootstrap         # the container image: hack/base-image.sh, test/container
  pkg-config
  gzip zstd                  # baselines and test image variants
  umoci                      # independent reference extraction for tests
  attr libcap2-bin           # xattr and file capability tools for debugging tests
  util-linux                 # setpriv: non-root readers in tests; flock in hack/apiserver/build.sh
  docker-registry            # the real registry of test/registry
  apache2-utils              # htpasswd: bcrypt entries for the registry's basic auth
  curl unzip ca-certificates
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
hack/install-go.sh
