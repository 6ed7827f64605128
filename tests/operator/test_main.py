"""The operator's entry point: help, and an identity that needs no passwd entry."""

import socket
import subprocess
import sys

from videogen_operator.main import own_identity


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
