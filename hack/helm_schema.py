"""Writes helm/videogen/values.schema.json and helm/videogen/README.md from values.yaml, so the
three never drift.

Types and defaults come from the default values, descriptions from the comment above each key
(every value must have one); every object is closed (additionalProperties: false) so a misspelt
key fails `helm install`, except the free-form maps named in FREE_FORM.

    python hack/helm_schema.py            # rewrite the schema and the chart's README
    python hack/helm_schema.py --check    # exit 1 if either is out of date
"""

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "videogen"
FREE_FORM = {"resources", "nodeSelector", "affinity", "podLabels", "podAnnotations", "annotations", "labels",
             "podSecurityContext", "securityContext"}
ENUMS = {"pullPolicy": ["Always", "IfNotPresent", "Never"], "logLevel": ["DEBUG", "INFO", "WARNING", "ERROR"]}
# Kubernetes quantities: `--set runner.defaultCpu=8` arrives as a number, "8000m" as a string.
QUANTITIES = {"defaultCpu", "defaultMemory", "scratchSize"}
# kopf runs standalone (no peering): a second replica would handle every resource a second time.
# A resync interval of 0 would be a busy loop (the operator refuses it).
BOUNDS = {"replicas": {"minimum": 0}, "resyncSeconds": {"exclusiveMinimum": 0}}
KEY = re.compile(r"^( *)([A-Za-z][A-Za-z0-9]*):")


def descriptions(text: str) -> dict[str, str]:
    """The comment block right above each key of values.yaml, by dotted path."""
    found, comment, stack = {}, [], []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            comment.append(line.strip().lstrip("#").strip())
            continue
        match = KEY.match(line)
        if match:
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            if comment:
                found[".".join(k for _, k in stack)] = " ".join(comment)
        comment = []
    return found


def schema_of(key: str, value, path: str, described: dict[str, str]) -> dict:
    node = leaf_schema(key, value, path, described)
    if path and (key in FREE_FORM or node.get("type") != "object"):
        if path not in described:
            raise SystemExit(f"values.yaml: {path} has no comment saying what it is")
        node = {**node, "description": described[path], "default": value}
    return node


def leaf_schema(key: str, value, path: str, described: dict[str, str]) -> dict:
    if key in FREE_FORM:
        return {"type": "object"}
    if key in ENUMS:
        return {"type": "string", "enum": ENUMS[key]}
    if key in QUANTITIES:
        return {"type": ["string", "number"]}
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
            "properties": {k: schema_of(k, v, f"{path}.{k}".lstrip("."), described) for k, v in value.items()}}


def rows(schema: dict, path: str = ""):
    """(key, type, default, description) of every described value, in values.yaml's order."""
    for key, node in schema.get("properties", {}).items():
        name = f"{path}.{key}".lstrip(".")
        if "description" in node:
            kind = "/".join(node["type"]) if isinstance(node["type"], list) else node["type"]
            yield name, kind, json.dumps(node["default"]), node["description"]
        else:
            yield from rows(node, name)


def generate() -> tuple[str, str]:
    text = (CHART / "values.yaml").read_text()
    schema = {"$schema": "https://json-schema.org/draft-07/schema#",
              **schema_of("", yaml.safe_load(text), "", descriptions(text))}
    table = "\n".join(f"| `{k}` | {t} | `{d}` | {text_of(s)} |" for k, t, d, s in rows(schema))
    readme = (f"# The videogen chart\n\n{CHART_README_INTRO}\n\n"
              f"## Values\n\n| key | type | default | what |\n|---|---|---|---|\n{table}\n")
    return json.dumps(schema, indent=2) + "\n", readme


def text_of(description: str) -> str:
    return description.replace("|", "\\|")


CHART_README_INTRO = """\
Installs the videogen operator, which turns `VideoGeneration` resources into GPU Jobs that
generate Wan2.2 videos, upload them to S3 and report progress to Redis (the project's README
and docs/operator.md tell the whole story).

```sh
helm install videogen helm/videogen -n videogen-system --create-namespace \\
  --set s3.bucket=videos --set s3.credentialsSecret=s3-credentials --set redis.url=redis://redis:6379/0
```

Several teams can share a cluster: one release per team namespace, each watching its own
namespaces (`operator.watchNamespaces`), only one of them installing the CRD
(`crds.enabled=false` in the others). Cluster-scoped names carry the release's namespace, so
the same release name installs in several namespaces.

This file is generated from the comments in `values.yaml` by `hack/generate.sh` (with
`values.schema.json`); a test fails when it is stale."""


if __name__ == "__main__":
    targets = [CHART / "values.schema.json", CHART / "README.md"]
    contents = generate()
    if "--check" in sys.argv:
        sys.exit(0 if all(p.exists() and p.read_text() == c for p, c in zip(targets, contents, strict=True)) else 1)
    for path, content in zip(targets, contents, strict=True):
        path.write_text(content)
