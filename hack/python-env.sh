#!/usr/bin/env bash
# Creates (once) the project's Python environment from requirements.lock and prints its path.
# The environment lives outside the clone, keyed by the lock file's hash, so a fresh clone on
# the same machine reuses it and a changed lock makes a new one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIDEOGEN_CACHE:-$HOME/.cache/videogen}
key=$(cat "$root/requirements.lock" "$root/hack/python-env.sh" | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -e "$venv/.complete" ]; then
  mkdir -p "$cache"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "uv==0.13.9" >&2
  rm -rf "$venv"
  python3 -m uv venv -q --python "$(command -v python3)" "$venv" >&2
  python3 -m uv pip install -q --python "$venv/bin/python" --require-hashes -r "$root/requirements.lock" >&2
  touch "$venv/.complete"
fi
# The project itself is installed editable on every call (cheap), since each clone lives elsewhere:
# the checkout that ran this last is the one the environment imports.
python3 -m uv pip install -q --python "$venv/bin/python" --no-deps -e "$root" >&2
echo "$venv"
