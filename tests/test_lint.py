"""The code stays lint-clean (ruff, configured in pyproject.toml): unused names and imports,
undefined names and common bugs fail the suite rather than a review."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "runner", "operator", "tests", "bench", "hack"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
