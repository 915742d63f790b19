"""Contrastive losses against numpy formulas, and replica-count invariance."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import keras_compat, losses

from conftest import cpu_devices


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_pairs(z1, z2, temperature, normalize=True):
    """The paper's setting: 2N views, view k's positive is its pair, self excluded."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z = _normalize(z) if normalize else z
    n = len(z1)
    sim = z @ z.T / temperature
    positive = np.concatenate([np.arange(n) + n, np.arange(n)])
    return sim, positive


def numpy_nt_xent(z1, z2, temperature, normalize=True):
    """Sum of the 2N anchors' cross-entropies over the N positive pairs (the reference's
    scale: each pair counts both directions)."""
    sim, positive = _numpy_pairs(z1, z2, temperature, normalize)
    total = 0.0
    for i in range(len(sim)):
        others = [j for j in range(len(sim)) if j != i]
        denominator = np.sum(np.exp(sim[i, others]))
        total += -np.log(np.exp(sim[i, positive[i]]) / denominator)
    return total / len(z1)


def _log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def reference_form_nt_xent(z1, z2, temperature):
    """google-research/simclr's `add_contrastive_loss` as its code writes it: logits
    [ab, aa - 1e9 I] and [ba, bb - 1e9 I], loss = mean(loss_a + loss_b)."""
    z1, z2 = _normalize(z1.astype(np.float64)), _normalize(z2.astype(np.float64))
    n, eye = len(z1), np.eye(len(z1))
    ab, ba = z1 @ z2.T / temperature, z2 @ z1.T / temperature
    aa, bb = z1 @ z1.T / temperature - 1e9 * eye, z2 @ z2.T / temperature - 1e9 * eye
    loss_a = -_log_softmax(np.concatenate([ab, aa], 1))[np.arange(n), np.arange(n)]
    loss_b = -_log_softmax(np.concatenate([ba, bb], 1))[np.arange(n), np.arange(n)]
    return np.mean(loss_a + loss_b)


def _data(n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(temperature):
    z1, z2 = _data()
    loss, metrics = losses.nt_xent(z1, z2, temperature)
    assert float(loss) == pytest.approx(numpy_nt_xent(z1, z2, temperature), rel=1e-5)
    cross = _normalize(z1) @ _normalize(z2).T / temperature
    expected_acc = np.mean(np.argmax(cross, axis=1) == np.arange(len(z1)))
    assert float(metrics["contrast_acc"]) == pytest.approx(expected_acc)
    p = np.exp(cross - cross.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    entropy = -np.mean(np.sum(p * np.log(p + 1e-8), axis=1))
    assert float(metrics["contrast_entropy"]) == pytest.approx(entropy, rel=1e-4)


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_nt_xent_without_l2_normalisation_matches_numpy(temperature):
    z1, z2 = _data(seed=4)
    z1, z2 = 0.5 * z1, 0.5 * z2  # raw dot products, not cosines
    loss, _ = losses.nt_xent(z1, z2, temperature, normalize=False)
    assert float(loss) == pytest.approx(
        numpy_nt_xent(z1, z2, temperature, normalize=False), rel=1e-5
    )
    assert float(loss) != pytest.approx(numpy_nt_xent(z1, z2, temperature), rel=1e-2)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_is_the_reference_s_loss_a_plus_loss_b(temperature):
    z1, z2 = _data(n=7, d=4, seed=2)
    loss, _ = losses.nt_xent(z1, z2, temperature)
    expected = reference_form_nt_xent(z1, z2, temperature)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Not the mean over the 2N anchors, which is half of it.
    assert float(loss) != pytest.approx(expected / 2, rel=0.1)


def test_perfect_views_give_low_loss_and_full_accuracy():
    z = np.eye(8, dtype=np.float32)
    loss, metrics = losses.nt_xent(z, z, 0.1)
    assert float(metrics["contrast_acc"]) == 1.0
    assert float(loss) < numpy_nt_xent(*_data(8, 8), 0.1)


def test_nt_logistic_and_margin_triplet_match_numpy():
    z1, z2 = _data()
    t, margin = 0.5, 0.7
    sim, positive = _numpy_pairs(z1, z2, t)
    logistic, triplet = [], []
    for i in range(len(sim)):
        negatives = [j for j in range(len(sim)) if j not in (i, positive[i])]
        pos = sim[i, positive[i]]
        logistic.append(
            -np.log(1 / (1 + np.exp(-pos))) - np.mean(np.log(1 / (1 + np.exp(sim[i, negatives]))))
        )
        raw = sim[i] * t
        triplet.append(np.mean(np.maximum(raw[negatives] - raw[positive[i]] + margin, 0)))
    # Per positive pair, both directions (the NT-Xent scale).
    pairs = len(z1)
    assert float(losses.nt_logistic(z1, z2, t)[0]) == pytest.approx(
        np.sum(logistic) / pairs, rel=1e-5
    )
    assert float(losses.margin_triplet(z1, z2, t, margin=margin)[0]) == pytest.approx(
        np.sum(triplet) / pairs, rel=1e-5
    )


def _loss_and_grads_on(strategy, x1, x2, kernel, temperature=0.2):
    """Global loss and summed gradients, computed the way the train step does."""
    replicas = strategy.num_replicas_in_sync
    n = len(x1) // replicas
    with strategy.scope():
        w = tf.Variable(kernel)

    def shard(x):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                x[ctx.replica_id_in_sync_group * n : (ctx.replica_id_in_sync_group + 1) * n]
            )
        )

    def step(a, b):
        with tf.GradientTape() as tape:
            loss, _ = losses.nt_xent(a @ w, b @ w, temperature)
            scaled = loss / replicas
        grad = tape.gradient(scaled, w)
        ctx = tf.distribute.get_replica_context()
        return (
            ctx.all_reduce(tf.distribute.ReduceOp.SUM, scaled),
            ctx.all_reduce(tf.distribute.ReduceOp.SUM, grad),
        )

    loss, grad = strategy.run(tf.function(step), args=(shard(x1), shard(x2)))
    first = lambda v: strategy.experimental_local_results(v)[0].numpy()  # noqa: E731
    return first(loss), first(grad)


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_loss_and_gradients_do_not_depend_on_replica_count(replicas):
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(8, 6)).astype(np.float32)
    x2 = rng.normal(size=(8, 6)).astype(np.float32)
    kernel = rng.normal(size=(6, 4)).astype(np.float32)
    w = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        single_loss, _ = losses.nt_xent(x1 @ w, x2 @ w, 0.2)
    single_grad = tape.gradient(single_loss, w).numpy()
    strategy = keras_compat.mirrored_strategy(cpu_devices(replicas))
    loss, grad = _loss_and_grads_on(strategy, x1, x2, kernel)
    assert loss == pytest.approx(float(single_loss), abs=1e-5)
    np.testing.assert_allclose(grad, single_grad, atol=1e-5)


def _numpy_nt_xent_vectorised(z1, z2, temperature):
    sim, positive = _numpy_pairs(z1, z2, temperature)
    np.fill_diagonal(sim, -np.inf)
    log_denominator = np.log(np.sum(np.exp(sim - sim.max(1, keepdims=True)), axis=1)) + sim.max(1)
    return np.sum(log_denominator - sim[np.arange(len(sim)), positive]) / len(z1)


@pytest.mark.parametrize("block_rows", [1, 4, 5, 1024])
def test_blockwise_nt_xent_loss_and_gradients_match_numpy(block_rows):
    """Blocks that split the 2n = 12 anchors evenly, unevenly, one by one, or not at all:
    the loss equals numpy's, the custom gradient equals numpy finite differences."""
    z1, z2 = _data(6, 5, seed=3)
    t = 0.3
    x1, x2 = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([x1, x2])
        loss, metrics = losses.nt_xent(x1, x2, t, block_rows=block_rows)
    g1, g2 = tape.gradient(loss, [x1, x2])
    assert float(loss) == pytest.approx(_numpy_nt_xent_vectorised(z1, z2, t), rel=1e-5)
    cross = _normalize(z1) @ _normalize(z2).T
    assert float(metrics["contrast_acc"]) == pytest.approx(
        np.mean(np.argmax(cross, axis=1) == np.arange(6))
    )
    eps = 1e-4
    for z, grad, first in ((z1, g1, True), (z2, g2, False)):
        numeric = np.zeros_like(z, dtype=np.float64)
        for index in np.ndindex(z.shape):
            plus, minus = z.astype(np.float64).copy(), z.astype(np.float64).copy()
            plus[index] += eps
            minus[index] -= eps
            args_plus = (plus, z2) if first else (z1, plus)
            args_minus = (minus, z2) if first else (z1, minus)
            numeric[index] = (
                _numpy_nt_xent_vectorised(*args_plus, t) - _numpy_nt_xent_vectorised(*args_minus, t)
            ) / (2 * eps)
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-3, atol=1e-5)


def test_blockwise_nt_xent_in_a_compiled_function_does_not_depend_on_the_block_size():
    z1, z2 = _data(10, 4, seed=4)

    @tf.function
    def loss_and_grad(a, b, block_rows):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss, _ = losses.nt_xent(a, b, 0.5, block_rows=block_rows)
        return loss, tape.gradient(loss, a)

    loss, grad = loss_and_grad(tf.constant(z1), tf.constant(z2), 3)  # 7 blocks, last padded
    _, whole_grad = loss_and_grad(tf.constant(z1), tf.constant(z2), 1024)
    assert float(loss) == pytest.approx(_numpy_nt_xent_vectorised(z1, z2, 0.5), rel=1e-5)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-5, atol=1e-7)
