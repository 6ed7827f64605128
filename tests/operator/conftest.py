from pathlib import Path

import pytest

CRD_FILE = Path(__file__).parents[2] / "crds" / "videogenerations.videogen.io.yaml"


@pytest.fixture(scope="session")
def crd_applied(kube_apiserver):
    """The committed CRD on the real API server (what users apply)."""
    kube_apiserver.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kube_apiserver.kubectl("wait", "--for=condition=Established", "crd/videogenerations.videogen.io",
                           "--timeout=30s")
    return kube_apiserver
