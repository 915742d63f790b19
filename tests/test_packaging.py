"""`pip install .` gives the whole package and a `simclr-tf` command equal to
`python -m simclr_tf.main`."""

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO


def test_the_wheel_holds_every_module_and_a_working_simclr_tf_command(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "simclr_tf", source / "simclr_tf", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("simclr_tf-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(
            z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
        z.extractall(tmp_path / "installed")
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "simclr_tf").rglob("*.py")}
    assert modules <= names
    assert "simclr-tf = simclr_tf.main:run" in entry_points
    # The console script's function, run from the installed copy alone: a bad flag
    # stops with the CLI's one-line error and exit code 2.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from simclr_tf.main import run; "
            "sys.argv = ['simclr-tf', '--mode=nope']; run()",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "installed")},
        capture_output=True,
        text=True,
    )
    assert result.returncode in (1, 2), result.stderr
    assert "nope" in result.stderr and "pretrain" in result.stderr
