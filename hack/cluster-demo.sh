#!/usr/bin/env bash
# The whole system on this machine: brings up the test control plane, redis-server, an S3 server
# and the operator, applies examples/tiny-cpu.yaml and follows it to Succeeded, then prints where
# its MP4 is and copies it to ./tiny-cluster.mp4 (or $1). Everything stops when it ends.
# The first run builds the control plane from source (minutes); later runs take about a minute.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/hack/system-packages.sh"
venv=$(bash "$root/hack/python-env.sh")
VIDEOGEN_KUBE_BIN=$(bash "$root/hack/controlplane.sh" build)
export VIDEOGEN_KUBE_BIN VIDEOGEN_DEMO_OUTPUT=${1:-$PWD/tiny-cluster.mp4} PATH="$venv/bin:$VIDEOGEN_KUBE_BIN:$PATH"
cd "$root"
exec python -m pytest -s -q -p no:cacheprovider -p tests.support.services -p tests.support.cluster \
  hack/cluster_demo.py
