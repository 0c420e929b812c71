#!/usr/bin/env bash
# Build the FT-capable vCenter simulator from Debian's packaged govmomi sources (no downloads).
#   tools/vcsim/build.sh OUT     (default .build/ftvcsim)
# Quick and idempotent: nothing is rebuilt while OUT is newer than the sources.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-.build/ftvcsim}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/build.sh" ]; then
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
go build -trimpath -o "$out.tmp" main.go
mv -f "$out.tmp" "$out"
echo "vcsim: built $out" >&2
