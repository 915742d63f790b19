"""Interruption: SIGKILL mid-run, then the same command continues to the end."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import checkpoints

from conftest import REPO


def _command(model_dir, data_dir):
    return [
        sys.executable,
        "-m",
        "simclr_tf.main",
        "--flagfile=flags/cifar10_common.cfg",
        "--mode=pretrain",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--depth=18",
        "--width_multiplier=0.125",
        "--batch_size=16",
        "--train_steps=12",
        "--checkpoint_steps=2",
        "--strategy=one_device",
        "--eval_steps=1",
        "--knn_bank_size=128",
        "--shuffle_buffer=128",
        "--warmup_epochs=0",
    ]


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(str(model_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def test_sigkill_then_rerun_resumes_and_finishes(tmp_path, cifar_data_dir):
    model_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        _command(model_dir, cifar_data_dir),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while _latest_step(model_dir) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(model_dir)
    assert 4 <= killed_at < 12, "the run must be killed mid-way"
    assert not (model_dir / "results.json").exists()

    rerun = subprocess.run(
        _command(model_dir, cifar_data_dir),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resumed from {model_dir}/ckpt-" in rerun.stderr
    results = json.loads((model_dir / "results.json").read_text())
    assert results["global_step"] == 12
    assert _latest_step(model_dir) == 12


def test_interrupted_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    variable = tf.Variable(np.arange(4, dtype=np.float32))
    manager = checkpoints.CheckpointManager({"v": variable}, str(tmp_path))
    manager.save(1)
    # What a kill during the next save leaves: temporary shards, no index update.
    partial = tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001"
    partial.parent.mkdir()
    partial.write_bytes(b"\x00garbage")
    (tmp_path / "ckpt-2.data-00000-of-00001").write_bytes(b"half a file")
    variable.assign(np.zeros(4, np.float32))
    fresh = checkpoints.CheckpointManager({"v": variable}, str(tmp_path))
    assert fresh.restore_latest().endswith("ckpt-1")
    np.testing.assert_array_equal(variable.numpy(), np.arange(4))


def _tiny_pretrain_model():
    import functools

    from simclr_tf import LARS, losses
    from simclr_tf.models import heads, resnet, step_models

    model = step_models.PretrainModel(
        resnet.resnet(18, 0.125, cifar_stem=True, input_shape=(8, 8, 3)),
        heads.ProjectionHead(num_layers=2, out_dim=8),
        functools.partial(losses.nt_xent, temperature=0.5),
        num_classes=3,
    )
    model(tf.zeros([1, 8, 8, 3]))
    model.compile(optimizer=LARS(0.1, weight_decay=1e-4))
    model.optimizer.build(model.trainable_variables)
    return model


def _guarded_saver(directory):
    """A tiny model with the run's divergence guard and its one save path."""
    from simclr_tf import callbacks

    model = _tiny_pretrain_model()
    manager = checkpoints.CheckpointManager(checkpoints.checkpoint_items(model), str(directory))
    guard = callbacks.NonFiniteLoss()
    saver = callbacks.SaveCheckpoint(manager, guard=guard)
    for callback in (guard, saver):
        callback.set_model(model)
    return model, guard, saver


def test_a_non_finite_batch_norm_statistic_is_never_saved(tmp_path):
    """Moving statistics are not trainable, yet a NaN there is a diverged model: the
    run's one save path (also the preemption save's) refuses it and keeps the good
    checkpoint."""
    model, guard, saver = _guarded_saver(tmp_path)
    assert saver.save_now() is not None  # step 0, finite: saved
    moving = next(v for v in model.non_trainable_variables if "moving_variance" in v.path)
    moving.assign(tf.fill(moving.shape, float("nan")))
    model.optimizer.iterations.assign(5)
    assert saver.save_now() is None
    assert guard.step == 5 and model.stop_training
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest is not None and latest.endswith("-0")


def test_a_truncated_latest_checkpoint_resumes_from_the_one_before(tmp_path):
    """The newest checkpoint's data cut short (as a full disk leaves it): the rerun
    restores the previous one, sets the bad one aside and keeps every good one."""
    model = _tiny_pretrain_model()
    manager = checkpoints.CheckpointManager(checkpoints.checkpoint_items(model), str(tmp_path))
    kernel = model.encoder.trainable_variables[0]
    values = {}
    for step in (2, 4, 6):
        kernel.assign(tf.fill(kernel.shape, float(step)))
        model.optimizer.iterations.assign(step)
        manager.save(step)
        values[step] = kernel.numpy()
    data = next(tmp_path.glob("ckpt-6.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    fresh = _tiny_pretrain_model()
    again = checkpoints.CheckpointManager(checkpoints.checkpoint_items(fresh), str(tmp_path))
    path = again.restore_latest()
    assert path.endswith("ckpt-4")
    np.testing.assert_array_equal(fresh.encoder.trainable_variables[0].numpy(), values[4])
    assert int(fresh.optimizer.iterations.numpy()) == 4
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    assert list(tmp_path.glob("ckpt-6.data-*.corrupt"))
    # Saving on: retention (3 kept) drops nothing good for the bad one.
    again.save(6)
    kept = sorted(int(p.name.split("-")[1].split(".")[0]) for p in tmp_path.glob("ckpt-*.index"))
    assert kept == [2, 4, 6]


def test_no_readable_checkpoint_is_one_error(tmp_path):
    model = _tiny_pretrain_model()
    manager = checkpoints.CheckpointManager(checkpoints.checkpoint_items(model), str(tmp_path))
    manager.save(1)
    next(tmp_path.glob("ckpt-1.index")).write_bytes(b"garbled")
    fresh = checkpoints.CheckpointManager(
        checkpoints.checkpoint_items(_tiny_pretrain_model()), str(tmp_path)
    )
    with pytest.raises(checkpoints.UnreadableCheckpoint, match="no checkpoint in"):
        fresh.restore_latest()


@pytest.mark.slow
def test_a_full_disk_during_a_save_stops_in_one_line_and_the_rerun_resumes(
    tmp_path, cifar_data_dir
):
    """A run whose checkpoint cannot be written (a file-size limit of 64 KiB stands for
    a full disk) stops at the save with exit 3 and one line; the checkpoint before it
    stays, and the same command with space resumes there and finishes."""
    import resource

    model_dir = tmp_path / "run"
    command = _command(model_dir, cifar_data_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = [c if not c.startswith("--train_steps") else "--train_steps=4" for c in command]
    assert subprocess.run(first, cwd=REPO, env=env, capture_output=True).returncode == 0
    assert _latest_step(model_dir) == 4

    def small_files():  # Python ignores SIGXFSZ, so an oversize write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    full = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=small_files
    )
    errors = [l for l in full.stderr.splitlines() if l.startswith("simclr_tf: error:")]
    assert full.returncode == 3, full.stderr[-3000:]
    assert len(errors) == 1 and "saving step 6" in errors[0] and "ckpt-4 is intact" in errors[0]
    assert "Traceback" not in full.stderr
    assert _latest_step(model_dir) == 4 and not list(model_dir.glob("*_temp*"))
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _latest_step(model_dir) == 12


@pytest.mark.slow
def test_killed_at_five_random_points_ends_on_the_uninterrupted_weights(tmp_path, cifar_data_dir):
    """A deterministic run (the same batches on every rerun) SIGKILLed five times at
    random moments, rerun after each kill, ends with the weights of a run never
    interrupted, within 1e-6 of each tensor's norm: the replayed batches and the
    restored state are the same numbers, but multithreaded CPU reductions may add in
    another order in another process (the preemption test's bound, for its reason)."""
    import random

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def command(model_dir):
        return _command(model_dir, cifar_data_dir) + ["--deterministic", "--train_steps=24"]

    reference = tmp_path / "reference"
    assert subprocess.run(command(reference), cwd=REPO, env=env).returncode == 0
    run = tmp_path / "run"
    rng = random.Random(5)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(
            command(run), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(4.0, 12.0))  # start-up, tracing, steps or a save
        if proc.poll() is not None:
            break  # it finished first
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run(command(run), cwd=REPO, env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    assert kills >= 3, "too few kills landed mid-run to mean anything"
    want = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(reference)))
    got = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run)))
    names = [n for n in want.get_variable_to_shape_map() if "save_counter" not in n]
    assert len(names) > 50
    for name in names:
        a, b = got.get_tensor(name), want.get_tensor(name)
        if np.issubdtype(np.asarray(b).dtype, np.floating):
            assert np.linalg.norm(a - b) <= 1e-6 * max(np.linalg.norm(b), 1e-30), name
        else:
            assert np.array_equal(a, b), name


def test_a_preempted_diverged_worker_saves_nothing(tmp_path, monkeypatch):
    """The preemption handler's save (what a SIGTERMed multi-worker run calls at the
    agreed step) goes through the run's guarded save: with NaN weights it writes no
    checkpoint, so the restart resumes from the last good one."""
    from simclr_tf import preemption

    model, guard, saver = _guarded_saver(tmp_path)
    assert saver.save_now() is not None  # the good checkpoint, step 0

    configs = []

    class RecordingHandler:  # TensorFlow's handler needs a cluster; keep its contract
        def __init__(self, cluster_resolver, checkpoint, checkpoint_dir, termination_config):
            configs.append(termination_config)

    monkeypatch.setattr(preemption, "applies", lambda strategy: True)
    monkeypatch.setattr(tf.distribute.experimental, "PreemptionCheckpointHandler", RecordingHandler)
    strategy = type("Strategy", (), {"cluster_resolver": None})()
    with preemption.saving_on_preemption(strategy, saver.save_now, str(tmp_path)) as extra:
        (callback,) = extra
        callback.on_train_begin()
        kernel = model.encoder.trainable_variables[0]
        kernel.assign(tf.fill(kernel.shape, float("nan")))
        model.optimizer.iterations.assign(7)
        configs[0].save_fn()  # the agreed step: preempted
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest is not None and latest.endswith("-0")
    assert guard.step == 7 and not list(tmp_path.glob("ckpt-7*"))
