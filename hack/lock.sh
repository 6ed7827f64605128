#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml's ranges (run after changing a dependency):
#   requirements.lock           everything, for tests and development (Python 3.11, x86_64)
#   requirements-runner.lock    the runner image (x86_64 Linux, with the GPU extras)
#   requirements-operator.lock  the operator image
# The image locks hold every Python of requires-python (3.11 and 3.12), with markers where the
# versions differ (pyproject.toml's [tool.uv] environments: Linux x86_64 only), since an image may
# be built on any Python base of that range (the tests build them on Debian's 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "uv==0.13.9"
compile() { python3 -m uv pip compile -q pyproject.toml --generate-hashes "$@"; }
compile --python-platform x86_64-manylinux_2_28 --python-version 3.11 --extra runner --extra operator --extra test \
  -o requirements.lock
compile --universal --python-version 3.11 --extra runner --extra gpu -o requirements-runner.lock
compile --universal --python-version 3.11 --extra operator -o requirements-operator.lock
