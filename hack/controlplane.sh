#!/usr/bin/env bash
# Builds (once) the binaries of the test control plane from pinned sources through the Go
# module proxy, since no container engine or release download is available, and prints the
# directory holding them all (usable as VIDEOGEN_KUBE_BIN). Logs go to stderr.
#
#   hack/controlplane.sh build   build what is missing, print the directory
#   hack/controlplane.sh path    print the directory if everything is built, else exit 1
#
# Each tool is cached outside the clone in $VIDEOGEN_CACHE/bin/<name>-<version>/ (default
# cache: $HOME/.cache/videogen), so fresh clones on the same machine reuse it. Binaries found in
# $KUBEBUILDER_ASSETS (envtest: etcd, kube-apiserver, kubectl) are used instead of the cached ones
# (the four Kubernetes commands are built together unless all four are there).
# The Kubernetes and etcd versions are the ones required by hack/controlplane/{kube,etcd}/go.mod.
set -euo pipefail

here=$(cd "$(dirname "$0")/controlplane" && pwd)
cache=${VIDEOGEN_CACHE:-$HOME/.cache/videogen}/bin
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBE_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_TOOLS=(etcd "${KUBE_TOOLS[@]}" kwok helm kubeconform kstatus kueue)

log() { echo "controlplane: $*" >&2; }
# An interrupted build leaves no temporary directory behind ($out: see build_into).
trap 'if [ -n "${out:-}" ]; then rm -rf "$out"; fi' EXIT

required() { # module version required by a wrapper go.mod
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 }' "$here/$1/go.mod"
}
KUBE_VERSION=$(required kube k8s.io/kubernetes)
ETCD_VERSION=$(required etcd go.etcd.io/etcd/server/v3)
# kstatus: a small program of ours on cli-utils, so its cache key holds the program's hash too.
KSTATUS_VERSION=$(required kstatus sigs.k8s.io/cli-utils)-$(cat "$here/kstatus/main.go" "$here/kstatus/go.sum" |
  sha256sum | cut -c1-8)
KUEUE_VERSION=$(required kueue sigs.k8s.io/kueue)

# Directory in which a tool's build is cached.
tool_dir() {
  case $1 in
    etcd) echo "$cache/etcd-$ETCD_VERSION" ;;
    kube-*|kubectl) echo "$cache/kube-$KUBE_VERSION" ;;
    kwok) echo "$cache/kwok-$KWOK_VERSION" ;;
    helm) echo "$cache/helm-$HELM_VERSION" ;;
    kubeconform) echo "$cache/kubeconform-$KUBECONFORM_VERSION" ;;
    kstatus) echo "$cache/kstatus-$KSTATUS_VERSION" ;;
    kueue) echo "$cache/kueue-$KUEUE_VERSION-$(declare -f build_kueue | cat - "$here/kueue/go.sum" |
      sha256sum | cut -c1-8)" ;;
  esac
}

# Path of a tool's binary, or nothing if it is not built yet.
resolve() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$1" ]; then
    echo "$(cd "$KUBEBUILDER_ASSETS" && pwd)/$1"
  elif [ -x "$(tool_dir "$1")/$1" ]; then
    echo "$(tool_dir "$1")/$1"
  fi
}

# Runs a build command (after the directory argument) with $out set to a temporary
# directory, then renames it into place, so an interrupted build leaves nothing half-done.
build_into() {
  local dir=$1 start=$SECONDS
  shift
  [ -d "$dir" ] && return 0
  mkdir -p "$cache"
  out=$(mktemp -d "$dir.tmp.XXXXXX")
  log "building $(basename "$dir")"
  if ! "$@" >&2; then
    rm -rf "$out"
    log "building $(basename "$dir") failed"
    return 1
  fi
  chmod 755 "$out"
  # -T: if a concurrent build won the race, keep its result and drop ours.
  mv -T "$out" "$dir" 2>/dev/null || rm -rf "$out"
  log "built $(basename "$dir") in $((SECONDS - start))s"
}

build_kube() {
  local minor=${KUBE_VERSION#v1.} ldflags="-s -w" pkg
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  # One invocation: the packages the four commands share compile once.
  (cd "$here/kube" && go build -trimpath -ldflags="$ldflags" -o "$out/" \
    "${KUBE_TOOLS[@]/#/k8s.io/kubernetes/cmd/}")
}

build_etcd() {
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_kstatus() {
  (cd "$here/kstatus" && go build -trimpath -ldflags="-s -w" -o "$out/kstatus" .)
}

# Kueue's manager, with its CRDs and webhook configurations beside it (tests/support/kueue.py
# installs them). Upstream reads the metrics certificate from a fixed /etc folder whenever its
# internal certificate management is off, and exits without it: the copy of main.go built here
# takes the folder from KUEUE_METRICS_CERT_DIR instead.
build_kueue() {
  local src dir
  src=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p') || return 1
  dir="$out/src"
  mkdir -p "$dir" "$out/manifests" || return 1
  cp "$here/kueue/go.mod" "$here/kueue/go.sum" "$dir/" || return 1
  sed -e 's#metricsCertPath := "/etc/kueue/metrics/certs"#metricsCertPath := cmp.Or(os.Getenv("KUEUE_METRICS_CERT_DIR"), "/etc/kueue/metrics/certs")#' \
    -e 's#^import (#import (\n\t"cmp"#' "$src/cmd/kueue/main.go" >"$dir/main.go" || return 1
  grep -q KUEUE_METRICS_CERT_DIR "$dir/main.go" || return 1
  (cd "$dir" && go build -trimpath -ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    -o "$out/kueue" .) || return 1
  cp "$src"/config/components/crd/bases/*.yaml "$out/manifests/" || return 1
  cp "$src/config/components/webhook/manifests.yaml" "$out/webhooks.yaml" || return 1
  chmod -R u+w "$out" && rm -rf "$dir"
}

# Tools whose own go.mod has no replace directives install straight from the proxy.
go_install() {
  GOBIN=$out GOFLAGS=-buildvcs=false go install -trimpath -ldflags="-s -w ${2:-}" "$1"
}

# kwok simulates nodes and pods by the Stage definitions it reads from --config: keep upstream's
# "fast" set (nodes Ready at once with heartbeats and leases, pods Running at once) beside it.
build_kwok() {
  local src file
  # (Runs where errexit is off, see build_into: every step checks its own status.)
  go_install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || return 1
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p') || return 1
  for file in "$src"/kustomize/stage/{node/fast,node/heartbeat-with-lease,pod/fast}/*.yaml; do
    if grep -q '^kind: Stage$' "$file"; then
      echo "---"
      cat "$file"
    fi
  done >"$out/kwok-stages.yaml"
  grep -q '^kind: Stage$' "$out/kwok-stages.yaml"
}

build_missing() {
  if ! command -v go >/dev/null; then
    log "go is needed to build the control plane (any Go >= 1.21 fetches the toolchain it needs)"
    return 1
  fi
  export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
  local name
  for name in "${KUBE_TOOLS[@]}"; do
    if [ -z "$(resolve "$name")" ]; then
      build_into "$(tool_dir "$name")" build_kube
      break
    fi
  done
  if [ -z "$(resolve etcd)" ]; then
    build_into "$(tool_dir etcd)" build_etcd
  fi
  build_into "$(tool_dir kwok)" build_kwok
  build_into "$(tool_dir helm)" go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  build_into "$(tool_dir kubeconform)" go_install \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
    "-X main.version=$KUBECONFORM_VERSION"
  build_into "$(tool_dir kstatus)" build_kstatus
  build_into "$(tool_dir kueue)" build_kueue
}

# Prints one directory of links to every tool, named after where the tools come from.
link_all() {
  local name path links="" dir
  for name in "${ALL_TOOLS[@]}"; do
    path=$(resolve "$name")
    if [ -z "$path" ]; then
      log "$name is not built: run hack/controlplane.sh build"
      return 1
    fi
    links+="$name $path"$'\n'
  done
  links+="kwok-stages.yaml $(dirname "$(resolve kwok)")/kwok-stages.yaml"$'\n'
  links+="kueue-manifests $(dirname "$(resolve kueue)")/manifests"$'\n'
  links+="kueue-webhooks.yaml $(dirname "$(resolve kueue)")/webhooks.yaml"$'\n'
  dir="$cache/controlplane-$(printf '%s' "$links" | sha256sum | cut -c1-16)"
  if [ ! -d "$dir" ]; then
    mkdir -p "$cache"
    local tmp
    tmp=$(mktemp -d "$dir.tmp.XXXXXX")
    while read -r name path; do ln -s "$path" "$tmp/$name"; done <<<"${links%$'\n'}"
    chmod 755 "$tmp"
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
  fi
  echo "$dir"
}

case ${1:-build} in
  build)
    build_missing
    link_all
    ;;
  path) link_all ;;
  *) echo "usage: $0 [build|path]" >&2; exit 2 ;;
esac
