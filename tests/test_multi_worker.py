"""MultiWorkerMirroredStrategy on 127.0.0.1: worker processes started by
tools/launch_workers.py pretrain together (only the chief writes), stop together when
one is preempted, resume to the uninterrupted run's weights, and give the
single-process results on the same global batch.

Tolerances. A preempted-and-resumed run repeats the uninterrupted run's operations in
the same order on the same batches, so they agree to rounding: 1e-6 of each variable's
norm. Other topologies sum the same products in another order (gradients all-reduced,
global BN statistics from partial sums), which moves an update by rounding only, by an
amount that depends on the batch (batch norm over few images nearly cancels in late
layers). The yardstick is measured on the same global batch: one device trained on its
examples in another order, which reorders every sum over the batch. The topologies must
stay within 10 times that; the loss (a forward pass, nothing cancels) within 2e-3
relatively, the bound 20 layers * 576 products * 2^-24 = 7e-4 with room.
"""

import json
import os
import signal
import subprocess
import sys
import time

import global_batch_training
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import keras_compat
from tools.launch_workers import start_workers, wait_all

from conftest import REPO, cpu_devices

RUN_FLAGS = [
    "--flagfile=flags/cifar10_common.cfg",
    "--mode=pretrain",
    "--strategy=multi_worker",
    "--depth=18",
    "--width_multiplier=0.125",
    "--num_proj_layers=2",
    "--batch_size=16",
    "--eval_steps=1",
    "--knn_bank_size=64",
    "--shuffle_buffer=64",
    "--train_split=train[:2000]",
    "--eval_split=test[:500]",
    "--precision=float32",
]


def _job(tmp_path, model_dir, data_dir, *flags, name="job"):
    """Starts two workers of `simclr_tf.main`; returns their Popens and log files."""
    logs = tmp_path / f"{name}_logs"
    logs.mkdir(exist_ok=True)
    chief_log = open(logs / "worker_0.log", "w")  # noqa: SIM115
    command = [
        sys.executable,
        "-m",
        "simclr_tf.main",
        *RUN_FLAGS,
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *flags,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = start_workers(2, command, str(logs), env=env, chief_output=chief_log)
    return procs, [logs / f"worker_{i}.log" for i in range(2)]


def _finish(procs, logs, timeout=600):
    deadline = time.time() + timeout
    for p in procs:
        p.wait(timeout=max(1, deadline - time.time()))
    return [p.returncode for p in procs], [log.read_text() for log in logs]


def _variables(checkpoint):
    reader = tf.train.load_checkpoint(str(checkpoint))
    return {
        name: reader.get_tensor(name)
        for name, dtype in reader.get_variable_to_dtype_map().items()
        if dtype.is_floating and "/.ATTRIBUTES/" in name and "save_counter" not in name
    }


@pytest.mark.slow  # 80 s: three worker processes, twice
def test_a_preempted_worker_stops_the_job_and_the_restart_ends_at_the_same_weights(
    tmp_path, cifar_data_dir
):
    steps = 60
    flags = [
        f"--train_steps={steps}",
        "--checkpoint_steps=10",
        "--deterministic",
        "--summary_steps=1000",
    ]
    reference, run = tmp_path / "reference", tmp_path / "run"
    # The uninterrupted run, started by the launcher as a user would, with the kNN
    # monitor at the end (replicated across both workers).
    launched = subprocess.run(
        [
            sys.executable,
            "tools/launch_workers.py",
            "--num_workers=2",
            f"--log_dir={tmp_path / 'reference_logs'}",
            "--",
            *RUN_FLAGS,
            f"--data_dir={cifar_data_dir}",
            f"--model_dir={reference}",
            *flags,
        ],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    worker_log = (tmp_path / "reference_logs" / "worker_1.log").read_text()
    assert launched.returncode == 0, launched.stderr[-6000:] + worker_log[-3000:]
    assert "2 replica(s)" in launched.stderr
    results = json.loads((reference / "results.json").read_text())
    assert results["global_step"] == steps and 0 <= results["knn_acc"] <= 1
    assert not list(reference.glob(".worker_tmp_*")) and not (reference / ".preemption").exists()

    procs, logs = _job(tmp_path, run, cifar_data_dir, *flags, name="preempted")
    deadline = time.time() + 300
    while not (run / "ckpt-10.index").exists():
        assert time.time() < deadline and procs[0].poll() is None, logs[0].read_text()[-6000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # the non-chief: it must stop the chief too
    codes, outputs = _finish(procs, logs)
    assert codes == [143, 143], outputs[0][-6000:] + outputs[1][-6000:]
    saved = int(tf.train.latest_checkpoint(str(run)).rsplit("-", 1)[1])
    assert 10 <= saved < steps
    assert "Preempted: saved step" in outputs[0] and not (run / "results.json").exists()

    restarted = _job(tmp_path, run, cifar_data_dir, *flags, name="restarted")
    codes, outputs = _finish(*restarted)
    assert codes == [0, 0], outputs[0][-6000:]
    assert f"Resumed from {run}/ckpt-{saved}" in outputs[1]  # the non-chief too
    assert json.loads((run / "results.json").read_text())["global_step"] == steps
    want, got = _variables(reference / f"ckpt-{steps}"), _variables(run / f"ckpt-{steps}")
    assert want.keys() == got.keys() and len(want) > 50
    for name, value in want.items():
        assert np.linalg.norm(got[name] - value) <= 1e-6 * np.linalg.norm(value), name


def test_topologies_agree_on_one_global_batch(tmp_path, cifar_data_dir):
    """1 x 1, 1 worker x 2 devices and 2 workers x 1 device: the same losses and
    weights, since every replica's loss sees the negatives of the whole global batch."""
    batch = global_batch_training.global_batch(cifar_data_dir)
    np.savez(tmp_path / "batch.npz", **batch)
    one_losses, initial, one = global_batch_training.train(
        tf.distribute.OneDeviceStrategy("/cpu:0"), batch
    )
    order = np.random.default_rng(0).permutation(len(batch["label"]))
    _, _, reordered = global_batch_training.train(
        tf.distribute.OneDeviceStrategy("/cpu:0"), {k: v[order] for k, v in batch.items()}
    )
    two_losses, initial_two, two_devices = global_batch_training.train(
        keras_compat.mirrored_strategy(cpu_devices(2)), batch
    )
    command = [
        sys.executable,
        str(REPO / "tests" / "global_batch_training.py"),
        str(tmp_path / "batch.npz"),
        str(tmp_path / "workers.npz"),
    ]
    procs = start_workers(2, command, str(tmp_path), chief_output=open(tmp_path / "w0.log", "w"))
    assert wait_all(procs) == 0, (tmp_path / "w0.log").read_text()[-6000:]
    with np.load(tmp_path / "workers.npz") as f:
        worker_losses = f["losses"]
        two_workers = [f[f"arr_{i}"] for i in range(len(one))]
    assert all(np.array_equal(a, b) for a, b in zip(initial, initial_two))  # seeded alike
    for losses in (two_losses, worker_losses):
        np.testing.assert_allclose(losses, one_losses, rtol=2e-3)
    update = _flat(one) - _flat(initial)
    assert np.count_nonzero(update) > update.size // 2
    rounding = np.linalg.norm(_flat(reordered) - _flat(one))
    assert 0 < rounding < 1e-2 * np.linalg.norm(update)
    for weights in (two_devices, two_workers):
        assert np.linalg.norm(_flat(weights) - _flat(one)) <= 10 * rounding


def _flat(weights):
    return np.concatenate([w.ravel() for w in weights])
