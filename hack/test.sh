#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what is missing (Debian
# packages, the locked Python environment, the test control plane built from source, the two
# images built from their Dockerfiles), then runs pytest. Extra arguments go to pytest (e.g. hack/test.sh tests/unit -x).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash hack/system-packages.sh
venv=$(bash hack/python-env.sh)
VIDEOGEN_KUBE_BIN=$(bash hack/controlplane.sh build)
bash hack/images.sh build >/dev/null
export VIDEOGEN_KUBE_BIN PATH="$venv/bin:$VIDEOGEN_KUBE_BIN:$PATH"
exec python -m pytest -q -p no:cacheprovider --durations=15 "$@"
