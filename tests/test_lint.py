"""The code follows the linter and formatter settings in pyproject.toml."""

import shutil
import subprocess

from conftest import REPO


def _ruff(*args):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: python3 -m pip install -r requirements-test.txt"
    return subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_check_passes():
    result = _ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_unchanged():
    result = _ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr
