#!/usr/bin/env bash
# Regenerates the files derived from code: the CRD (crds/ and the chart's copy) and the chart's
# values.schema.json. Tests fail when the committed files differ from these.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash hack/python-env.sh)
"$venv/bin/python" -m videogen_operator.crd > crds/videogenerations.videogen.io.yaml
cp crds/videogenerations.videogen.io.yaml helm/videogen/files/
"$venv/bin/python" hack/helm_schema.py
