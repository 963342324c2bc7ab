# explodefs as a container image: the daemon, the shared libraries it
# links (libostree, zlib) and curl for the health check; no compiler, no Go.
#
# Build it with hack/container-image.sh (podman), which first makes the base
# image below with hack/base-image.sh: a debootstrapped Debian 12, since no
# image registry is reachable here. Any other bookworm image works too:
#   podman build --build-arg BASE_IMAGE=docker.io/library/debian:bookworm-slim .
#
# Run it privileged (FUSE and passthrough need CAP_SYS_ADMIN and /dev/fuse),
# with the state directory on a volume: FUSE passthrough refuses backing
# files on the container's overlay. A host that should see the tree binds a
# shared directory with rshared propagation over the mountpoint, e.g.
#   podman run -d --privileged --device /dev/fuse \
#     -v /var/lib/explodefs/state:/var/lib/explodefs/state \
#     -v /srv/images:/var/lib/explodefs/images:ro \
#     -v /var/lib/explodefs/mnt:/var/lib/explodefs/mnt:rshared \
#     localhost/explodefs:dev
ARG BASE_IMAGE=localhost/debian:bookworm

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev zlib1g-dev libisal-dev libostree-dev pkg-config \
      curl unzip ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# CAs mounted at /usr/local/share/ca-certificates during the build (an HTTPS
# proxy's) are trusted from here on, for the downloads of this stage only.
RUN update-ca-certificates >/dev/null
WORKDIR /src
# The Go toolchain go.mod names, fetched from the module proxy exactly as
# on a developer's machine.
ARG GOPROXY
COPY go.mod go.sum ./
COPY hack/install-go.sh hack/
RUN hack/install-go.sh
ENV PATH=/usr/local/go/bin:$PATH \
    CGO_ENABLED=1 \
    GOFLAGS=-buildvcs=false \
    GOTOOLCHAIN=local
# A layer of its own, so that a change of the code does not download the
# modules again. hack/container-image.sh also mounts the host's module and
# build caches at these paths, which makes both steps quick.
RUN go mod download
COPY . .
RUN go build -o /explodefs ./cmd/explodefs && /explodefs version

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# The libraries ldd names for the binary come with libostree-1-1, zlib1g
# and libisal2.
# go-fuse mounts with mount(2) directly as root, so no fuse3/fusermount.
# The trust store is rebuilt without the CAs mounted for the build: the
# image trusts Debian's CAs and nothing of the machine it was built on.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libostree-1-1 zlib1g libisal2 ca-certificates curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* /etc/ssl/certs/* \
 && update-ca-certificates --fresh --localcertsdir /nonexistent >/dev/null
COPY --from=build /explodefs /usr/local/bin/explodefs
RUN if ldd /usr/local/bin/explodefs | grep 'not found'; then exit 1; fi \
 && explodefs version
LABEL org.opencontainers.image.title="explodefs" \
      org.opencontainers.image.description="OCI and OpenShift images as a read-only FUSE tree, committed to OSTree" \
      org.opencontainers.image.source="https://github.com/explodefs/explodefs"
# /healthz, /readyz, /metrics and /status. The listener is set through its
# variable rather than a flag, so that the health check can follow it:
# -e EXPLODEFS_LISTEN=127.0.0.1:9800 moves both (with --network host, say).
ENV EXPLODEFS_LISTEN=0.0.0.0:9797
EXPOSE 9797
# /healthz fails while the FUSE mount does not answer a stat within 5 s.
# podman keeps HEALTHCHECK only in docker-format images, which is why
# hack/container-image.sh builds with --format docker.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null --max-time 8 "http://127.0.0.1:${EXPLODEFS_LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/explodefs"]
CMD ["serve", \
     "--source=oci-dir:/var/lib/explodefs/images", \
     "--mountpoint=/var/lib/explodefs/mnt", \
     "--state-dir=/var/lib/explodefs/state"]
