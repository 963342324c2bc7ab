#!/usr/bin/env bash
# Makes the base image of the Dockerfile, localhost/debian:bookworm (or
# $BASE_IMAGE), unless podman already has it. There is no image registry
# here, so the image is a minimal Debian made with debootstrap from the
# same Debian mirror the host's apt uses, imported into podman. Installs
# podman, runc and debootstrap when missing (Debian 12, as root). Takes a
# minute or two the first time and a fraction of a second after that.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${BASE_IMAGE:-localhost/debian:bookworm}
suite=bookworm

# podman's default runtime, crun, does not start here; runc does.
packages=(podman runc debootstrap)
hack/apt-install.sh "${packages[@]}"

# Two builds at once must not both debootstrap.
mkdir -p /run/lock
exec 9>/run/lock/explodefs-base-image.lock
flock 9

if podman image exists "$image"; then
  exit 0
fi

# The first URI of the host's apt sources that serves the main archive
# (not debian-security), from deb822 .sources files or one-line .list ones.
host_uri() {
  local want=$1
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for (i = 2; i <= NF; i++) print $i}'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; break}}'
  } | grep -E "$want" | head -n1
}
mirror=${DEBIAN_MIRROR:-$(host_uri '/debian/?$' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(host_uri '/debian-security/?$' || true)}
security=${security:-http://deb.debian.org/debian-security}

work=$(mktemp -d /var/tmp/explodefs-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
echo "debootstrap --variant=minbase $suite from $mirror"
start=$SECONDS
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
}

# Point-release updates and security fixes too, from the same mirrors.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Images are rebuilt, not upgraded in place: no caches, docs or lists.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
# As Debian's slim images do: no manuals, docs (bar copyrights) or
# translations, now or from packages installed later.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "${rootfs:?}"/usr/share/{man,groff,info,lintian,linda,locale}/*
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/debootstrap
# podman provides /dev, /proc and /sys of each container.
rm -rf "${rootfs:?}"/dev/* "${rootfs:?}"/proc/* "${rootfs:?}"/sys/*
: >"$rootfs/etc/hostname"

tar --numeric-owner --xattrs -C "$rootfs" -c . |
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite $mirror" - "$image" >/dev/null
echo "made $image in $((SECONDS - start)) s"
