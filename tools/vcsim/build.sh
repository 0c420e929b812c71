#!/usr/bin/env bash
# Build the FT-capable vCenter simulator from Debian's packaged govmomi sources (no downloads).
#   tools/vcsim/build.sh OUT     (default .build/ftvcsim)
# Quick and idempotent: OUT is rebuilt only when the sources changed. "Changed" is decided by
# content, not modification times (a checkout, copy or clock skew can leave a stale OUT newer
# than its sources): OUT.stamp records a SHA-256 of the Go sources and this script, and of the govmomi
# package version when dpkg knows it; OUT is reused only while its stamp matches.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-.build/ftvcsim}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

stamp="$out.stamp"
want=$( {
    sha256sum "$here"/*.go "$here/build.sh" | cut -d' ' -f1
    dpkg-query -W -f='${Version}\n' golang-github-vmware-govmomi-dev 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)
if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "vcsim: 'go' not found; install golang-go (scripts/install-deps.sh all)" >&2
    exit 1
fi
gopath=/usr/share/gocode
if [ ! -d "$gopath/src/github.com/vmware/govmomi/simulator" ]; then
    echo "vcsim: govmomi sources missing; install golang-github-vmware-govmomi-dev" >&2
    exit 1
fi
export GO111MODULE=off GOPATH="$gopath" GOFLAGS=
# Keep Go's build cache next to the output so a missing or read-only $HOME does not matter.
export GOCACHE=${GOCACHE:-$(dirname "$out")/go-cache}
cd "$here"
go build -trimpath -o "$out.tmp" .
rm -f "$stamp"
mv -f "$out.tmp" "$out"
echo "$want" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
echo "vcsim: built $out" >&2
