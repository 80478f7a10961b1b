#!/usr/bin/env bash
# Build the real programs the tests run against, from their Go modules, at pinned releases:
#   kube-apiserver  (k8s.io/kubernetes, every k8s.io staging module pinned to the same release)
#   etcd            (go.etcd.io/etcd/server/v3, the release that Kubernetes version requires)
#   flagger         (github.com/fluxcd/flagger/cmd/flagger: the newest release and an older one)
#
# Each binary goes to a cache outside the repository, keyed by its version, so a second run
# costs nothing:
#   ${CANARYWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarywatch}/realcluster/<name>-<version>/<name>
# Nothing built here is ever committed.
#
# Usage: tests/realcluster/build.sh               build whatever is missing
#        tests/realcluster/build.sh --print NAME  print the path of one binary, build nothing
#                                                 (exit 1 when it is not built); NAME is
#                                                 kube-apiserver, etcd, flagger-v1.44.0, ...
#        tests/realcluster/build.sh --list        print NAME VERSION PATH of every binary
set -euo pipefail

K8S_VERSION="${CANARYWATCH_K8S_VERSION:-v1.34.4}"
# The etcd release that Kubernetes v1.34.4 itself requires (its go.mod: go.etcd.io/etcd/* v3.6.4).
ETCD_VERSION="${CANARYWATCH_ETCD_VERSION:-v3.6.4}"
# The newest Flagger release and an older 1.x one still in wide use (module-proxy versions).
FLAGGER_VERSIONS="${CANARYWATCH_FLAGGER_VERSIONS:-v1.44.0 v1.37.0}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

cache_root="${CANARYWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarywatch}/realcluster"

binary_path() {  # NAME VERSION
  echo "$cache_root/$1-$2/$1"
}

all_binaries() {  # NAME VERSION lines
  echo "kube-apiserver $K8S_VERSION"
  echo "etcd $ETCD_VERSION"
  for v in $FLAGGER_VERSIONS; do echo "flagger $v"; done
}

case "${1:-}" in
  --print)
    wanted="${2:?usage: $0 --print NAME}"
    while read -r name version; do
      if [ "$wanted" = "$name" ] || [ "$wanted" = "$name-$version" ]; then
        path="$(binary_path "$name" "$version")"
        [ -x "$path" ] || exit 1
        echo "$path"
        exit 0
      fi
    done < <(all_binaries)
    echo "realcluster: no binary named $wanted" >&2
    exit 2
    ;;
  --list)
    while read -r name version; do echo "$name $version $(binary_path "$name" "$version")"; done \
      < <(all_binaries)
    exit 0
    ;;
  "") ;;
  *) echo "usage: $0 [--print NAME | --list]" >&2; exit 2 ;;
esac

missing=0
while read -r name version; do
  [ -x "$(binary_path "$name" "$version")" ] || missing=1
done < <(all_binaries)
if [ "$missing" = 0 ]; then
  echo "realcluster: every binary is already built" >&2
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "realcluster: the 'go' command is not installed; it is needed to build kube-apiserver, etcd and Flagger" >&2
  exit 3
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

install_binary() {  # built-file NAME VERSION
  local target
  target="$(binary_path "$2" "$3")"
  mkdir -p "$(dirname "$target")"
  mv "$1" "$target"
}

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
  local minor
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  (cd "$dir" && go get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" \
    && go build -trimpath -o "$dir/kube-apiserver" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}" \
      k8s.io/kubernetes/cmd/kube-apiserver)
  install_binary "$dir/kube-apiserver" kube-apiserver "$K8S_VERSION"
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
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$dir/etcd" .)
  install_binary "$dir/etcd" etcd "$ETCD_VERSION"
}

build_flagger() {  # VERSION
  local version="$1" dir="$work/flagger-$1"
  mkdir -p "$dir"
  # Flagger's go.mod has no replace directives: a module that requires it builds cmd/flagger
  # with exactly the dependency versions Flagger's own release build uses.
  printf 'module canarywatch.test/realcluster/flagger\n\ngo 1.22\n' > "$dir/go.mod"
  (cd "$dir" && go get "github.com/fluxcd/flagger/cmd/flagger@${version}" \
    && go build -trimpath -o "$dir/flagger" \
      -ldflags "-s -w -X github.com/fluxcd/flagger/pkg/version.VERSION=${version#v}" \
      github.com/fluxcd/flagger/cmd/flagger)
  install_binary "$dir/flagger" flagger "$version"
}

started=$(date +%s)
while read -r name version; do
  [ -x "$(binary_path "$name" "$version")" ] && continue
  echo "realcluster: building $name $version" >&2
  step=$(date +%s)
  log="$work/$name-$version.log"
  if ! case "$name" in
    kube-apiserver) build_apiserver ;;
    etcd) build_etcd ;;
    flagger) build_flagger "$version" ;;
  esac >"$log" 2>&1; then
    echo "realcluster: building $name $version failed:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  echo "realcluster: built $name $version in $(( $(date +%s) - step )) s" >&2
done < <(all_binaries)
echo "realcluster: done in $(( $(date +%s) - started )) s" >&2
