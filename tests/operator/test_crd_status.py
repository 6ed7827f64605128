"""The status schema in the CRD: every field described (`kubectl explain`), conditions keyed by type."""

import pytest

from tests.support.services import wait_until
from videogen_operator.crd import crd


def status_schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def undescribed(schema: dict, path: str) -> list[str]:
    """Paths of the properties under `schema` that have no description."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{path}.{name}")
        missing += undescribed(prop.get("items", prop), f"{path}.{name}")
    return missing


def test_every_status_field_is_described():
    schema = status_schema()
    assert schema.get("description") and undescribed(schema, "status") == []


def test_conditions_are_a_map_keyed_by_type():
    conditions = status_schema()["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]  # a map key must be required


@pytest.mark.cluster
def test_kubectl_explains_the_status(crd_applied):
    def explain(path: str) -> str:
        return crd_applied.kubectl("explain", path, check=False).stdout

    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    wait_until(lambda: explain("videogenerations.status"), 30, "the CRD's OpenAPI")
    explained = explain("videogenerations.status")
    assert "What happened, written by the operator alone." in explained
    assert "metadata.generation the status was computed from." in explained  # observedGeneration
    conditions = explain("videogenerations.status.conditions.reason")
    assert "One CamelCase word" in conditions
