"""The tools users run beside training start and refuse bad input cleanly."""

import pathlib
import subprocess
import sys

from conftest import REPO


def test_every_benchmark_module_imports():
    # In its own process: the benchmark defines absl flags on the global FLAGS.
    names = [
        p.stem for p in sorted((REPO / "tools" / "benchmark").glob("*.py")) if p.stem != "__main__"
    ]
    code = "; ".join(f"import tools.benchmark.{n}" for n in names)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_benchmark_without_a_mode_prints_its_usage_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "tools.benchmark"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: python -m tools.benchmark step|input|fit|budget|memory|conv" in result.stderr


def test_benchmark_modes_are_one_module_each():
    modes = {p.stem for p in pathlib.Path(REPO / "tools" / "benchmark").glob("*.py")}
    assert {"step", "input_pipeline", "fit", "budget", "memory", "kernel_grads"} <= modes
