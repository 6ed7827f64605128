#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml's ranges (run after changing a dependency):
#   requirements.lock           everything, for tests and development (Python 3.11, x86_64)
#   requirements-runner.lock    the runner image (Python 3.12, x86_64, with the GPU extras)
#   requirements-operator.lock  the operator image (Python 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "uv==0.13.9"
compile() { python3 -m uv pip compile -q pyproject.toml --generate-hashes --python-platform x86_64-manylinux_2_28 "$@"; }
compile --python-version 3.11 --extra runner --extra operator --extra test -o requirements.lock
compile --python-version 3.12 --extra runner --extra gpu -o requirements-runner.lock
compile --python-version 3.12 --extra operator -o requirements-operator.lock
