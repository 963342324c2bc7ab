#!/usr/bin/env bash
# Installs what building, running and testing explodefs needs on Debian 12,
# as root. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  gcc libc6-dev zlib1g-dev   # cgo: zlib checkpoints
  libisal-dev                # cgo: ISA-L's igzip, which reads from the checkpoints
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
hack/apt-install.sh "${packages[@]}"
hack/install-go.sh
