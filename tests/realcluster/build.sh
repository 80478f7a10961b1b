#!/usr/bin/env bash
# Build the real Kubernetes control plane the tests run against: kube-apiserver from the Go
# module k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3, at pinned releases.
#
# Binaries go to a cache outside the repository, keyed by version, so a second run costs nothing:
#   ${CANARYWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarywatch}/realcluster/<name>-<version>/
# Nothing built here is ever committed. Prints the directory holding the binaries on its last line.
#
# Usage: tests/realcluster/build.sh            build what is missing
#        tests/realcluster/build.sh --print    print the directory, build nothing (exit 1 if absent)
set -euo pipefail

K8S_VERSION="${CANARYWATCH_K8S_VERSION:-v1.34.4}"
# The etcd release that Kubernetes ${K8S_VERSION} itself requires (its go.mod: go.etcd.io/etcd/* v3.6.4).
ETCD_VERSION="${CANARYWATCH_ETCD_VERSION:-v3.6.4}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

cache_root="${CANARYWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarywatch}/realcluster"
bin_dir="$cache_root/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"
apiserver="$bin_dir/kube-apiserver"
etcd="$bin_dir/etcd"

if [ "${1:-}" = "--print" ]; then
  [ -x "$apiserver" ] && [ -x "$etcd" ] || exit 1
  echo "$bin_dir"
  exit 0
fi

if [ -x "$apiserver" ] && [ -x "$etcd" ]; then
  echo "realcluster: kube-apiserver ${K8S_VERSION} and etcd ${ETCD_VERSION} already built" >&2
  echo "$bin_dir"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "realcluster: the 'go' command is not installed; it is needed to build kube-apiserver and etcd" >&2
  exit 3
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin_dir"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

build_apiserver() {
  local dir="$work/kube-apiserver"
  mkdir -p "$dir"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # directories; a module that depends on it must pin each one to the matching release instead.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  {
    echo "module canarywatch.test/realcluster/kubeapiserver"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    sed -n "s#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 ${STAGING_VERSION}#p" "$gomod"
    echo ")"
  } > "$dir/go.mod"
  (cd "$dir" && go get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" >/dev/null \
    && go build -trimpath -o "$apiserver.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" \
      k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$apiserver.tmp" "$apiserver"
}

build_etcd() {
  local dir="$work/etcd"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module canarywatch.test/realcluster/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat > "$dir/main.go" <<'GO'
// etcd's own main: etcdmain.Main is what the released etcd binary runs.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy >/dev/null && go build -trimpath -ldflags "-s -w" -o "$etcd.tmp" .)
  mv "$etcd.tmp" "$etcd"
}

[ -x "$etcd" ] || { echo "realcluster: building etcd ${ETCD_VERSION}" >&2; build_etcd; }
[ -x "$apiserver" ] || { echo "realcluster: building kube-apiserver ${K8S_VERSION} (several minutes cold)" >&2; build_apiserver; }
echo "realcluster: built in $(( $(date +%s) - started )) s into $bin_dir" >&2
echo "$bin_dir"
