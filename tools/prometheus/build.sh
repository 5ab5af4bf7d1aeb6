#!/usr/bin/env bash
# Builds the Prometheus server from its upstream Go module (pinned by go.mod beside this script) into
# the tools cache and prints its bin directory. It has a cache key of its own (its version and a hash
# of these pins), so changing it never moves or rebuilds the control-plane tools of ../build.sh, and
# theirs never rebuild it. A binary already in the cache is reused; concurrent callers wait on one lock.
#
# The build leaves out every service discovery plugin (the upstream `remove_all_sd` tag) and, as
# upstream does without `builtinassets`, the web UI assets: tests need only the scrape loop and the
# HTTP API over static loopback targets.
#
#   SKYFLEET_TOOLS_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/skyfleet/tools)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

module_version=$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' "$here/go.mod")
# The Go module v0.MMM.P is Prometheus M.MM.P (v0.316.0 is 3.16.0).
version=$(echo "$module_version" | awk -F. '{m = $2 + 0; printf "%d.%d.%s", int(m / 100), m % 100, $3}')
pins_hash=$(cat "$here/build.sh" "$here"/go.* "$here/tools.go" | sha256sum | cut -c1-10)

cache_root=${SKYFLEET_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skyfleet/tools}
bin="$cache_root/prometheus-$version-$pins_hash/bin"
mkdir -p "$bin"

exec 9>"$bin/.lock"
flock 9

if [ ! -x "$bin/prometheus" ]; then
  tmp=$(mktemp -d "$bin/.build.XXXXXX")
  echo "building prometheus $version ..." >&2
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$version" \
    -o "$tmp/" github.com/prometheus/prometheus/cmd/prometheus)
  mv "$tmp/prometheus" "$bin/" && rmdir "$tmp"
fi
echo "$bin"
