"""One training process per run directory (simclr_tf/run_lock.py)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from simclr_tf import run_lock

from conftest import REPO


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with run_lock.holding(str(tmp_path)) as path:
        assert json.loads(open(path).read())["pid"] == os.getpid()
        with pytest.raises(run_lock.RunLocked, match=f"in use by pid {os.getpid()}"):
            run_lock.acquire(str(tmp_path))
    assert not (tmp_path / run_lock.LOCK_FILE).exists()  # released
    with run_lock.holding(str(tmp_path)):
        pass


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    lock = tmp_path / run_lock.LOCK_FILE
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "since": 0}))
    with run_lock.holding(str(tmp_path)) as path:
        assert json.loads(open(path).read())["pid"] == os.getpid()


def test_a_second_run_on_a_busy_directory_stops_in_one_line(tmp_path, cifar_data_dir):
    """The lock a live run holds (this test process plays it) refuses a pretraining
    started on the same directory before any work, exit 2, and stays in place."""
    with run_lock.holding(str(tmp_path)):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "simclr_tf.main",
                "--flagfile=flags/study_cpu.cfg",
                f"--model_dir={tmp_path}",
                f"--data_dir={cifar_data_dir}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert (tmp_path / run_lock.LOCK_FILE).exists()
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("simclr_tf: error:")]
    assert len(errors) == 1 and f"in use by pid {os.getpid()}" in errors[0], result.stderr[-2000:]
