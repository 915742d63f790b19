"""The tools users run beside training start and refuse bad input cleanly."""

import importlib
import pathlib
import subprocess
import sys

from conftest import REPO


def test_every_benchmark_module_imports_without_tensorflow_work():
    for path in sorted((REPO / "tools" / "benchmark").glob("*.py")):
        if path.stem != "__main__":
            importlib.import_module(f"tools.benchmark.{path.stem}")


def test_benchmark_without_a_mode_prints_its_usage_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "tools.benchmark"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: python -m tools.benchmark step|input|fit|budget|memory|conv" in result.stderr


def test_benchmark_modes_are_one_module_each():
    modes = {p.stem for p in pathlib.Path(REPO / "tools" / "benchmark").glob("*.py")}
    assert {"step", "input_pipeline", "fit", "budget", "memory", "kernel_grads"} <= modes
