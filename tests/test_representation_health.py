"""The collapse monitor (models/representation_health.py, callbacks.CollapseWarning)
against numpy and against planted collapsed and healthy encoders."""

import functools
import logging
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import callbacks, losses
from simclr_tf.models import heads, representation_health, step_models


def _numpy_effective_rank(h):
    h = h - h.mean(axis=0, keepdims=True)
    s = np.linalg.svd(h, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_projection_std_of_a_spread_and_a_collapsed_batch():
    d = 16
    spread = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)  # +-e_i
    # Each dimension: one +1, one -1, 2d - 2 zeros: variance 2 / 2d.
    assert float(representation_health.projection_std(spread)) == pytest.approx(
        1 / np.sqrt(d), rel=1e-6
    )
    collapsed = np.tile(np.random.default_rng(0).normal(size=(1, d)), (64, 1))
    assert float(representation_health.projection_std(collapsed)) == pytest.approx(0, abs=1e-6)
    gaussian = np.random.default_rng(1).normal(size=(4096, 128)).astype(np.float32)
    assert float(representation_health.projection_std(gaussian)) == pytest.approx(
        representation_health.healthy_std(128), rel=0.05
    )


def test_effective_rank_against_numpy_and_known_ranks():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(64, 32)).astype(np.float32) * np.linspace(0.1, 3, 32)
    # The Gram matrix squares h's condition number in float32: 1e-3.
    assert float(representation_health.effective_rank(h)) == pytest.approx(
        _numpy_effective_rank(h.astype(np.float64)), rel=1e-3
    )
    # k orthonormal zero-mean columns: k equal singular values, effective rank k.
    a = rng.normal(size=(64, 5))
    q, _ = np.linalg.qr(a - a.mean(axis=0))
    h = np.concatenate([q, np.zeros((64, 11))], axis=1).astype(np.float32)
    assert float(representation_health.effective_rank(h)) == pytest.approx(5, rel=1e-4)
    line = np.outer(rng.normal(size=64), rng.normal(size=16)).astype(np.float32)
    assert float(representation_health.effective_rank(line)) == pytest.approx(1, abs=1e-2)


def test_a_diverging_batch_never_stops_the_monitor():
    """Huge values (a run blowing up) give the same rank as the scaled batch; a
    non-finite entry gives NaN instead of an eigen-decomposition error."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=(64, 16)).astype(np.float32)
    huge = h * np.float32(1e30)
    assert float(representation_health.effective_rank(huge)) == pytest.approx(
        float(representation_health.effective_rank(h)), rel=1e-4
    )
    for bad in (np.inf, np.nan):
        broken = h.copy()
        broken[3, 5] = bad
        assert np.isnan(float(representation_health.effective_rank(broken)))
        metrics = representation_health.metrics(broken, broken)
        assert all(np.isfinite(float(v)) or np.isnan(float(v)) for v in metrics.values())


class ConstantEncoder(keras.layers.Layer):
    def call(self, images):
        return {"final_avg_pool": tf.zeros([tf.shape(images)[0], 32]) + 0.5}


class PixelEncoder(keras.layers.Layer):
    def call(self, images):
        return {"final_avg_pool": tf.reshape(images, [tf.shape(images)[0], -1])[:, :32]}


def _step_logs(encoder, images):
    model = step_models.PretrainModel(
        encoder,
        heads.ProjectionHead(num_layers=1, out_dim=8),
        functools.partial(losses.nt_xent, temperature=0.5),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    half = len(images) // 2
    data = {"view1": images[:half], "view2": images[half:], "label": np.zeros(half, np.int32)}
    logs = model.train_on_batch(x=data, return_dict=True)
    return {k: float(np.asarray(v)) for k, v in logs.items()}


def test_a_collapsed_encoder_reads_zero_and_a_healthy_one_does_not(cifar_data_dir):
    from simclr_tf.data import open_source

    source = open_source("cifar10", data_dir=cifar_data_dir)
    batch = next(iter(source.load("test", False).take(64).batch(64)))
    images = tf.cast(batch["image"], tf.float32).numpy() / 255.0
    collapsed = _step_logs(ConstantEncoder(), images)
    assert collapsed["proj_std"] == pytest.approx(0, abs=1e-6)
    assert collapsed["effective_rank"] == pytest.approx(1, abs=1e-3)
    healthy = _step_logs(PixelEncoder(), images)
    assert healthy["proj_std"] > 0.3 * representation_health.healthy_std(8)
    assert healthy["effective_rank"] > 3


def _warnings_for(values, caplog, patience=5):
    warning = callbacks.CollapseWarning(dim=64, threshold=0.2, patience=patience)
    step = {"n": 0}
    iterations = types.SimpleNamespace(numpy=lambda: step["n"])
    warning.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=iterations)))
    with caplog.at_level(logging.WARNING):
        for value in values:
            step["n"] += 1
            warning.on_train_batch_end(0, {"proj_std": value, "effective_rank": 1.0})
    return [r for r in caplog.records if "looks collapsed" in r.getMessage()]


def test_the_warning_fires_once_after_patience_low_steps(caplog):
    healthy = representation_health.healthy_std(64)
    assert not _warnings_for([healthy] * 20, caplog)
    # Low, but interrupted before `patience` steps: no warning.
    assert not _warnings_for([0.01] * 4 + [healthy] + [0.01] * 4, caplog)
    assert len(_warnings_for([0.01] * 20, caplog)) == 1
