"""Writes helm/videogen/values.schema.json from values.yaml, so the two never drift.

Types come from the default values; every object is closed (additionalProperties: false) so a
misspelt key fails `helm install`, except the free-form maps named in FREE_FORM.

    python hack/helm_schema.py            # rewrite the schema
    python hack/helm_schema.py --check    # exit 1 if it is out of date
"""

import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "videogen"
FREE_FORM = {"resources", "nodeSelector", "affinity", "podLabels", "podAnnotations", "annotations", "labels"}
ENUMS = {"pullPolicy": ["Always", "IfNotPresent", "Never"], "logLevel": ["DEBUG", "INFO", "WARNING", "ERROR"]}
# kopf runs standalone (no peering): a second replica would handle every resource a second time.
# A resync interval of 0 would be a busy loop (the operator refuses it).
BOUNDS = {"replicas": {"minimum": 0, "maximum": 1}, "resyncSeconds": {"exclusiveMinimum": 0}}


def schema_of(key: str, value) -> dict:
    if key in FREE_FORM:
        return {"type": "object"}
    if key in ENUMS:
        return {"type": "string", "enum": ENUMS[key]}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", **BOUNDS.get(key, {"minimum": 0})}
    if isinstance(value, float):
        return {"type": "number", **BOUNDS.get(key, {"minimum": 0})}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        strings = key in ("watchNamespaces", "allowedHostPaths", "allowedPriorityClasses")
        return {"type": "array", "items": {"type": "string"} if strings else {"type": "object"}}
    return {"type": "object", "additionalProperties": False,
            "properties": {k: schema_of(k, v) for k, v in value.items()}}


def generate() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = {"$schema": "https://json-schema.org/draft-07/schema#", **schema_of("", values)}
    return json.dumps(schema, indent=2) + "\n"


if __name__ == "__main__":
    target = CHART / "values.schema.json"
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == generate() else 1)
    target.write_text(generate())
