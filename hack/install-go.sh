#!/usr/bin/env bash
# Installs the Go toolchain that go.mod names into /usr/local/go, unless a
# go of that version is already on PATH. Debian 12 ships Go 1.19, too old;
# the toolchain comes as a module zip from the Go module proxy, which is
# reachable where the rest of the internet may not be.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(awk '/^go /{print $2}' go.mod)
if have=$(PATH=/usr/local/go/bin:$PATH go env GOVERSION 2>/dev/null) && [ "$have" = "go$want" ]; then
  exit 0
fi
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
url="$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
command -v unzip >/dev/null || apt-get install -y -qq unzip >/dev/null
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "installing go$want from $url"
curl -fsSL -o "$tmp/go.zip" "$url"
unzip -q "$tmp/go.zip" -d "$tmp"
rm -rf /usr/local/go
mv "$tmp/golang.org/toolchain@v0.0.1-go$want.linux-$arch" /usr/local/go
chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
/usr/local/go/bin/go version
