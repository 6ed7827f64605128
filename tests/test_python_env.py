"""hack/python-env.sh: clones on one machine share the locked packages, and each imports its own
code (a CI clone beside a developer's checkout must test what it holds)."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]
NEEDED = ("hack/python-env.sh", "requirements.lock", "pyproject.toml", "README.md", "runner", "operator")


def copy_of_the_project(folder: Path) -> Path:
    for name in NEEDED:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target)
    return folder


def environment_of(clone: Path) -> Path:
    result = subprocess.run(["bash", str(clone / "hack" / "python-env.sh")], capture_output=True, text=True,
                            env=os.environ, timeout=300)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def where_it_imports(python: Path, package: str) -> Path:
    result = subprocess.run([str(python), "-c", f"import {package}; print({package}.__file__)"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def test_a_second_clone_shares_the_packages_and_each_imports_its_own_code(tmp_path):
    ours = environment_of(ROOT)
    other = copy_of_the_project(tmp_path / "other")
    theirs = environment_of(other)
    assert theirs == other / ".venv" and ours == ROOT / ".venv"
    assert where_it_imports(theirs / "bin" / "python", "videogen_runner").is_relative_to(other)
    assert where_it_imports(ours / "bin" / "python", "videogen_runner").is_relative_to(ROOT)  # not re-pointed
    assert where_it_imports(ours / "bin" / "python", "videogen_operator").is_relative_to(ROOT)
    # The heavy packages are the one shared set, not a copy per clone.
    assert where_it_imports(theirs / "bin" / "python", "torch") == where_it_imports(ours / "bin" / "python", "torch")
    assert (theirs / "bin" / "videogen-runner").exists()
