#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm from their upstream Go
# modules (pinned by the go.mod files beside this script) into a cache directory outside the
# repository, keyed by the pinned versions and a hash of the pins, and prints that bin directory.
# A binary already in the cache is reused; concurrent callers wait on one lock.
#
#   SKYFLEET_TOOLS_CACHE  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/skyfleet/tools)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")
kube_minor=$(echo "$kube_version" | cut -d. -f2)
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")
helm_version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$here/helm/go.mod")
pins_hash=$(cat "$here/build.sh" "$here"/kube/go.* "$here"/etcd/go.* "$here"/etcd/main.go "$here"/helm/go.* \
  | sha256sum | cut -c1-10)

cache_root=${SKYFLEET_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skyfleet/tools}
bin="$cache_root/k8s-$kube_version-etcd-$etcd_version-helm-$helm_version-$pins_hash/bin"
mkdir -p "$bin"

# One builder at a time; the others wait and then find the binaries present.
exec 9>"$bin/.lock"
flock 9

export GOFLAGS=-mod=readonly CGO_ENABLED=0
build() { # build <module dir> <ldflags> <package>...
  local dir=$1 ldflags=$2; shift 2
  local missing=()
  for pkg in "$@"; do [ -x "$bin/$(basename "$pkg")" ] || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local tmp; tmp=$(mktemp -d "$bin/.build.XXXXXX")
  echo "building ${missing[*]##*/} ..." >&2
  (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "${missing[@]}")
  mv "$tmp"/* "$bin/" && rmdir "$tmp"
}

kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/client-go/pkg/version.gitVersion=$kube_version
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
build etcd "" skyfleet.io/tools/etcd
build kube "$kube_ldflags" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
# Helm's default Capabilities (used by template, lint and client-side dry runs) are set at link
# time, as helm's own Makefile does; unset they claim Kubernetes 1.20.
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$helm_version
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor"
build helm "$helm_ldflags" helm.sh/helm/v3/cmd/helm

echo "$bin"
