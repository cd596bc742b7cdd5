#!/usr/bin/env bash
# Build loadgen (Go, standard library only, no network): Benchmarks/loadgen/build.sh [OUTPUT]
# Default OUTPUT: <repo>/.build-loadgen/loadgen. Prints the path of the binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go not found: install golang-go (Go 1.19 or later)" >&2
    exit 1
fi

out=${1:-$repo/.build-loadgen/loadgen}
case "$out" in
    /*) ;;
    *) out="$PWD/$out" ;;  # relative to the caller's directory, not to $here
esac
mkdir -p "$(dirname "$out")"

cd "$here"
GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=0 go build -trimpath -o "$out" .
echo "$out"
