#!/usr/bin/env bash
# Debian packages the tests need that a fresh machine lacks (installed once; later calls are no-ops).
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
# The images: built daemonless from the Dockerfiles on a stand-in base (hack/images.sh).
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
# Argo CD runs its health scripts on gopher-lua, a Lua 5.1 (tests/gitops).
command -v lua5.1 >/dev/null || missing+=(lua5.1)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
