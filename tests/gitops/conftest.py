from tests.operator.conftest import crd_applied  # noqa: F401 - the committed CRD on the real API server
