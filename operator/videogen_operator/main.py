"""`videogen-operator`: runs the kopf handlers with the settings from the environment."""

import logging

import kopf

from videogen_operator import handlers  # noqa: F401 - registers the handlers
from videogen_operator.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf.run(
        standalone=True,  # one replica; no peering CRDs needed
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
