"""The operator's entry point: help, and an identity that needs no passwd entry."""

import logging
import logging.handlers
import socket
import subprocess
import sys

from videogen_operator.leader import own_identity
from videogen_operator.main import RetriesAsWarnings


def test_help_lists_the_settings_and_starts_nothing():
    result = subprocess.run([sys.executable, "-m", "videogen_operator.main", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: videogen-operator" in result.stdout and "VIDEOGEN_NAMESPACES" in result.stdout


def test_an_unknown_argument_is_refused():
    result = subprocess.run([sys.executable, "-m", "videogen_operator.main", "--namespace", "x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_identity_is_the_pod_name_else_the_host_name():
    assert own_identity({"POD_ID": "videogen-7d9f-abcde"}) == "videogen-7d9f-abcde"
    assert own_identity({}) == socket.gethostname()


def test_kopfs_retried_requests_are_warnings_and_one_that_gives_up_stays_an_error():
    handler = logging.handlers.BufferingHandler(10)
    handler.addFilter(RetriesAsWarnings())
    kopf_log, own_log = logging.getLogger("kopf.objects"), logging.getLogger("videogen_operator.test")
    for log in (kopf_log, own_log):
        log.addHandler(handler)
    try:
        kopf_log.error("Request attempt #1/9 failed; will retry: GET https://127.0.0.1:6443/apis -> "
                       "ClientConnectorError()")
        kopf_log.error("Request attempt #9/9 failed; escalating: GET https://127.0.0.1:6443/apis -> "
                       "ClientConnectorError()")
        own_log.error("x failed; will retry: y")  # only kopf's
    finally:
        for log in (kopf_log, own_log):
            log.removeHandler(handler)
    assert [r.levelname for r in handler.buffer] == ["WARNING", "ERROR", "ERROR"]
