"""Prints the VideoGeneration CRD, generated from the pydantic models (models.py).

    python -m videogen_operator.crd > crds/videogenerations.videogen.io.yaml

A test fails when the committed file differs from what the models generate.
"""

import copy
import sys

import yaml

from videogen_operator.models import (
    GROUP,
    KIND,
    MODEL_RULES,
    PLURAL,
    SPEC_RULES,
    VERSION,
    VideoGenerationSpec,
    VideoGenerationStatus,
    rule,
)

# The spec is the request: once created, only `suspend` may change.
MUTABLE = {"suspend"}


def openapi(model) -> dict:
    """The model's JSON Schema as a Kubernetes structural OpenAPI v3 schema."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def convert(node):
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(definitions[node["$ref"].split("/")[-1]])
            return convert({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        node = {k: convert(v) for k, v in node.items() if k != "title"}
        if "anyOf" in node:  # X | None → X, nullable
            variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
            if len(variants) != 1:
                raise ValueError(f"cannot express {variants} in a structural schema")
            node = {**variants[0], **node, "nullable": True}
        if node.get("default", "") is None:
            node.pop("default")
        if "const" in node:
            node["enum"] = [node.pop("const")]
        for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
                node[inclusive], node[bound] = node[bound], True
        if node.get("type") == "object" and "properties" in node:
            node.pop("additionalProperties", None)
        return node

    return convert(schema)


def spec_schema() -> dict:
    spec = openapi(VideoGenerationSpec)
    # Optional sub-objects default to {} so that the server fills their own defaults in.
    for name, prop in spec["properties"].items():
        if prop.get("type") == "object" and "properties" in prop and name not in spec.get("required", []):
            prop.setdefault("default", {})
    # But none inside list items: GitOps tools compare lists whole and would take the fields the
    # server fills in for drift (the operator applies the same defaults when it reads the spec).
    for prop in spec["properties"].values():
        for field in prop.get("items", {}).get("properties", {}).values():
            field.pop("default", None)
    spec["properties"]["model"]["x-kubernetes-validations"] = MODEL_RULES
    required = set(spec.get("required", []))
    # One rule per field, so that a refused update names the field that changed.
    spec["x-kubernetes-validations"] = SPEC_RULES + [
        rule(f"self.{n} == oldSelf.{n}" if n in required else
             f"has(self.{n}) == has(oldSelf.{n}) && (!has(self.{n}) || self.{n} == oldSelf.{n})",
             "is immutable once created (only spec.suspend may change)", f".{n}", reason="FieldValueForbidden")
        for n in spec["properties"] if n not in MUTABLE
    ]
    return spec


def status_schema() -> dict:
    """The status as the operator writes it, defaulted to {observedGeneration: 0} until it does: the
    API server fills the default in on every read, so a resource the operator has not seen yet reads
    "generation 1 not observed" (kstatus: InProgress; Argo CD's script: Progressing), never Current
    as a resource without any status would for kstatus."""
    return {**openapi(VideoGenerationStatus), "default": {"observedGeneration": 0}}


def crd() -> dict:
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent", "description": "percent"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.progress.stage"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.preset"},
        {"name": "Output", "type": "string", "jsonPath": ".status.output.uri"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": KIND.lower(), "listKind": f"{KIND}List",
                      "shortNames": ["vg", "vgen"], "categories": ["videogen"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "One Wan2.2 video generated by a GPU Job, uploaded to S3.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object", "properties": {"name": {
                            "type": "string", "maxLength": 63,
                            "description": "At most 63 characters: it labels the Job's pods."}}},
                        "spec": spec_schema(),
                        "status": status_schema(),
                    },
                }},
            }],
        },
    }


def main() -> None:
    sys.stdout.write("# Generated by `python -m videogen_operator.crd` from operator/videogen_operator/models.py.\n")
    yaml.safe_dump(crd(), sys.stdout, sort_keys=False, width=120)


if __name__ == "__main__":
    main()
