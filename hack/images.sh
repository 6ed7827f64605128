#!/usr/bin/env bash
# Builds (once per input) the two images from Dockerfile.operator and Dockerfile.runner with
# buildah, daemonless (--isolation chroot), and prints where they are. No registry is reachable,
# so only the base is swapped (build argument PYTHON_BASE) for a stand-in made here: a Debian
# bookworm root filesystem with Python (debootstrap). The Dockerfiles install offline from wheel
# folders (build argument WHEELS) downloaded from the image locks, in a build context staged
# under the cache (nothing is written into the clone); they install in build stages and copy the
# installed packages into the image, so no wheel is in any layer of it.
#
#   hack/images.sh build   build what is missing, print the names (below)
#   hack/images.sh names   print them if everything is built, else exit 1
#
# Printed, one KEY=VALUE a line: VIDEOGEN_BUILDAH_ROOT, VIDEOGEN_BUILDAH_RUNROOT,
# VIDEOGEN_BUILDAH_DRIVER (buildah's --root, --runroot, --storage-driver), VIDEOGEN_OPERATOR_IMAGE
# and VIDEOGEN_RUNNER_IMAGE.
#
# Everything lives outside the clone under $VIDEOGEN_CACHE (default $HOME/.cache/videogen): the
# stand-in base keyed by its package list, each wheel folder by its lock's hash, the images (in
# buildah's storage, containers/) by the hash of all that goes into them, so a warm call costs a
# second. Dependencies come before the code in both Dockerfiles, and the build keeps its layers,
# so a change of the code alone rebuilds only the last layers. Logs go to stderr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIDEOGEN_CACHE:-$HOME/.cache/videogen}
store=$cache/containers
driver=${VIDEOGEN_BUILDAH_DRIVER:-overlay}   # vfs where overlay cannot be mounted (slower, bigger)
# The stand-in for python:3.12-slim-bookworm: Python with its venv module and headers, as there.
STANDIN_SUITE=bookworm
STANDIN_PACKAGES=python3,python3-venv,python3-dev,ca-certificates

log() { echo "images: $*" >&2; }
# Temporary folders, removed however the script ends.
scratch=()
trap 'if [ ${#scratch[@]} -gt 0 ]; then rm -rf "${scratch[@]}"; fi' EXIT
buildah_() { buildah --root "$store/storage" --runroot "$store/run" --storage-driver "$driver" "$@"; }
hash_of() { sha256sum | cut -c1-16; }
exists() { buildah_ inspect --type image "$1" >/dev/null 2>&1; }

standin_name() { echo "localhost/videogen-standin/python:$(echo "$STANDIN_SUITE $STANDIN_PACKAGES" | hash_of)"; }

# The files of the build context that an image's Dockerfile copies, and the Dockerfile itself.
inputs() { # operator|runner
  local dirs=(runner)
  [ "$1" = operator ] && dirs+=(operator)
  (cd "$root" && find "Dockerfile.$1" "requirements-$1.lock" "${dirs[@]}" README.md pyproject.toml .dockerignore \
    -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' | LC_ALL=C sort)
}
image_name() { # operator|runner
  echo "localhost/videogen-$1:$( (cd "$root" && inputs "$1" | xargs sha256sum; standin_name) | hash_of)"
}

build_standin() {
  local name rootfs ctr start=$SECONDS
  name=$(standin_name)
  exists "$name" && return 0
  log "debootstrap $STANDIN_SUITE ($STANDIN_PACKAGES)"
  rootfs=$(mktemp -d "$cache/standin.XXXXXX")
  scratch+=("$rootfs")
  debootstrap --variant=minbase --include="$STANDIN_PACKAGES" "$STANDIN_SUITE" "$rootfs" \
    http://deb.debian.org/debian >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr=$(buildah_ from scratch)
  buildah_ copy --quiet "$ctr" "$rootfs" / >/dev/null
  buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 "$ctr"
  buildah_ commit --quiet --rm "$ctr" "$name" >/dev/null
  log "stand-in base $name in $((SECONDS - start))s"
}

# Wheels of a lock for the stand-in's Python, and the setuptools that builds /src, in
# $cache/wheels-<hash>; printed. Debian's own python3 downloads them: the lock's markers are
# evaluated for the very Python of the stand-in (bookworm's 3.11.2).
wheels_for() { # lock
  local dir tmp start=$SECONDS
  dir=$cache/wheels-$( (cat "$root/$1" "$root/pyproject.toml"; standin_name) | hash_of)
  if [ ! -d "$dir" ]; then
    log "downloading the wheels of $1"
    tmp=$(mktemp -d "$dir.tmp.XXXXXX")
    scratch+=("$tmp")
    /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes -r "$root/$1" -d "$tmp" >&2
    /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
      "$(sed -n 's/^requires = \["\(setuptools[^"]*\)"\]$/\1/p' "$root/pyproject.toml")" >&2
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    log "wheels of $1 in $((SECONDS - start))s"
  fi
  echo "$dir"
}

# Builds one image from its Dockerfile in a build context of its own under the cache (removed
# after): its inputs and its wheels (WHEELS=wheels), all with one fixed modification time, since
# buildah's layer cache compares times too (a fresh clone would miss it). Earlier builds stay:
# removing them would take the layer cache with them (buildah rmi drops untagged parents).
build_image() { # operator|runner
  local name=$1 image context wheels old start=$SECONDS
  image=$(image_name "$name")
  exists "$image" && return 0
  wheels=$(wheels_for "requirements-$name.lock")
  context=$(mktemp -d "$cache/context-$name.XXXXXX")  # its own: builds may run side by side
  scratch+=("$context")
  (cd "$root" && inputs "$name" | xargs cp --parents -t "$context")
  cp -al "$wheels" "$context/wheels" 2>/dev/null || cp -a "$wheels" "$context/wheels"
  find "$context" -exec touch -h -d @0 {} +
  log "building $image"
  buildah_ build --layers --isolation chroot --network host -f "$context/Dockerfile.$name" \
    --build-arg PYTHON_BASE="$(standin_name)" --build-arg WHEELS=wheels -t "$image" "$context" >&2
  log "built $image in $((SECONDS - start))s: $(buildah_ images --format '{{.Size}}' "$image")"
}

names() {
  echo "VIDEOGEN_BUILDAH_ROOT=$store/storage"
  echo "VIDEOGEN_BUILDAH_RUNROOT=$store/run"
  echo "VIDEOGEN_BUILDAH_DRIVER=$driver"
  echo "VIDEOGEN_OPERATOR_IMAGE=$(image_name operator)"
  echo "VIDEOGEN_RUNNER_IMAGE=$(image_name runner)"
}

case ${1:-} in
  build)
    mkdir -p "$store"
    build_standin
    build_image operator
    build_image runner
    names ;;
  names)
    for image in "$(image_name operator)" "$(image_name runner)"; do
      exists "$image" || { log "$image is not built: run hack/images.sh build"; exit 1; }
    done
    names ;;
  *) echo "usage: $0 build|names" >&2; exit 2 ;;
esac
