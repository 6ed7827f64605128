#!/usr/bin/env bash
# Prints the path of this clone's Python environment, creating what is missing first.
#
# Two layers: the locked packages (torch and the rest, gigabytes) live once per machine outside
# the clone, keyed by the lock file's hash, so a fresh clone reuses them and a changed lock makes
# a new set; the project itself is installed in editable mode into a small environment inside
# the clone (.venv, ignored by git) that reads the shared packages through a .pth file. So two
# clones on one machine (CI's beside a developer's checkout) share the packages and each imports
# its own code.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIDEOGEN_CACHE:-$HOME/.cache/videogen}
key=$(cat "$root/requirements.lock" "$root/hack/python-env.sh" | sha256sum | cut -c1-16)
shared="$cache/venv-$key"
own="$root/.venv"
# The interpreter the environments are made from: the base installation, even when called from
# inside an environment (tests call this script with a clone's .venv first on PATH).
python=$(python3 -c 'import os, sys; print(os.path.join(sys.base_prefix, "bin", "python3"))')
uv() { # uv at its pinned version, in the base installation
  "$python" -m uv --version 2>/dev/null | grep -q "^uv 0.13.9 " ||
    "$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore "uv==0.13.9" >&2
  "$python" -m uv "$@"
}
stamp="$shared $(sha256sum < "$root/pyproject.toml" | cut -c1-16)"  # the console scripts come from pyproject
if [ ! -e "$shared/.complete" ]; then
  mkdir -p "$cache"
  rm -rf "$shared"
  uv venv -q --python "$python" "$shared" >&2
  uv pip install -q --python "$shared/bin/python" --require-hashes -r "$root/requirements.lock" >&2
  touch "$shared/.complete"
fi
if [ "$(cat "$own/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$own"
  uv venv -q --python "$python" "$own" >&2
  packages=$("$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # addsitedir, not a plain path line: the shared folder's own .pth files are read too.
  echo "import site; site.addsitedir('$packages')" > "$("$own/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/videogen-shared.pth"
  uv pip install -q --python "$own/bin/python" --no-deps -e "$root" >&2
  echo "$stamp" > "$own/.stamp"
fi
echo "$own"
