"""`videogen-operator`: runs the kopf handlers with the settings from the environment."""

import argparse
import logging

import kopf

from videogen_operator import handlers  # noqa: F401 - registers the handlers
from videogen_operator.leader import own_identity
from videogen_operator.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """No options: `--help` lists the VIDEOGEN_* settings instead of starting."""
    settings = "\n".join(f"  VIDEOGEN_{name.upper():<34} {field.description or ''}".rstrip()
                         for name, field in Settings.model_fields.items())
    parser = argparse.ArgumentParser(
        prog="videogen-operator", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turns VideoGeneration resources into Jobs that run videogen-runner, and reports their status.",
        epilog=f"settings, from the environment (docs/operator.md):\n{settings}")
    return parser.parse_args(argv)


class RetriesAsWarnings(logging.Filter):
    """kopf logs every retried API request at ERROR: an API server's restart fills a minute with
    errors that need nobody. A retry is a warning; a request that gives up stays an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        retried = record.name.startswith("kopf") and "; will retry:" in record.getMessage()
        if record.levelno == logging.ERROR and retried:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def main(argv: list[str] | None = None) -> None:
    parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RetriesAsWarnings())
    kopf.run(
        standalone=True,  # the Lease elects the active replica (leader.py), not kopf's peering
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        identity=own_identity(),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
