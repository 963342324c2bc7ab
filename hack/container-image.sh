#!/usr/bin/env bash
# Builds the explodefs container image from the Dockerfile with podman, as
# localhost/explodefs:dev (or $IMAGE), after making the base image with
# hack/base-image.sh. Debian 12, as root.
#
# What this machine needs, and podman's defaults do not give:
#   - runc, because podman's default runtime crun does not start here;
#   - ulimits within the kernel's hard limits (runc fails with EPERM above);
#   - the host's network and extra CA certificates, because HTTPS (the Go
#     module proxy) passes a proxy whose CA only the host trusts;
#   - docker format, the only one that keeps the HEALTHCHECK.
# The host's Go module and build caches are mounted into the build steps,
# so a rebuild compiles only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-localhost/explodefs:dev}
base=${BASE_IMAGE:-localhost/debian:bookworm}

BASE_IMAGE=$base hack/base-image.sh

args=(
  --network host
  --format docker
  --pull=never
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
  --build-arg "BASE_IMAGE=$base"
)
if [ -d /usr/local/share/ca-certificates ]; then
  args+=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
gobin=$(PATH=/usr/local/go/bin:$PATH command -v go || true)
if [ -n "$gobin" ] && [ "${EXPLODEFS_IMAGE_HOST_CACHES:-1}" = 1 ]; then
  modcache=$("$gobin" env GOMODCACHE)
  buildcache=$("$gobin" env GOCACHE)
  mkdir -p "$modcache" "$buildcache"
  args+=(-v "$modcache:/root/go/pkg/mod" -v "$buildcache:/root/.cache/go-build")
  proxy=$("$gobin" env GOPROXY)
else
  proxy=${GOPROXY:-}
fi
if [ -n "$proxy" ]; then
  args+=(--build-arg "GOPROXY=$proxy")
fi

# The build stage is tagged too (as IMAGE's name with -build): podman keeps
# an untagged stage only as a dangling image, and removing that would take
# the stage's cached layers with it. Images these tags named before are
# removed once replaced, unless a container still uses them, so that
# rebuilds do not pile up.
name=${image%:*} tag=${image##*:}
if [ "$name" = "$image" ] || [[ $tag == */* ]]; then
  name=$image tag=latest
fi
build_image=$name-build:$tag
id_of() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
old_ids=("$(id_of "$image")" "$(id_of "$build_image")")

start=$SECONDS
podman --runtime /usr/sbin/runc build "${args[@]}" --target build --tag "$build_image" .
podman --runtime /usr/sbin/runc build "${args[@]}" --tag "$image" .
for id in "${old_ids[@]}"; do
  if [ -n "$id" ] && [ "$id" != "$(id_of "$image")" ] && [ "$id" != "$(id_of "$build_image")" ]; then
    podman rmi "$id" >/dev/null 2>&1 || true
  fi
done
echo "built $image in $((SECONDS - start)) s"
