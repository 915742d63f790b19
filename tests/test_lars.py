"""LARS against an independent numpy implementation of the update, several steps."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.optim.lars import LARS


def numpy_lars(params, grads_per_step, lr, momentum, wd, eeta, excluded):
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    for grads in grads_per_step:
        for k, w in params.items():
            g = grads[k].astype(np.float64)
            scaled_lr = lr
            if k not in excluded:
                g = g + wd * w
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                trust = eeta * w_norm / g_norm if (w_norm > 0 and g_norm > 0) else 1.0
                scaled_lr = lr * trust
            velocity[k] = momentum * velocity[k] + scaled_lr * g
            params[k] = w - velocity[k]
    return params


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_lars_matches_numpy_with_excluded_variables(wd):
    rng = np.random.default_rng(0)
    init = {
        "kernel": rng.normal(size=(4, 3)),
        "bias": rng.normal(size=(3,)),
        "gamma": np.ones(3),
        "zeros": np.zeros((2, 2)),
    }
    init = {k: v.astype(np.float32) for k, v in init.items()}
    variables = {k: tf.Variable(v, name=k) for k, v in init.items()}
    grads = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()} for _ in range(5)
    ]
    optimizer = LARS(learning_rate=0.5, momentum=0.9, weight_decay=wd, eeta=0.001)
    # Excluded by object: names would not tell a BN "gamma" from the others here.
    optimizer.exclude_from_weight_decay(var_list=[variables["bias"], variables["gamma"]])
    names = list(variables)
    for step in grads:
        optimizer.apply_gradients([(tf.constant(step[k]), variables[k]) for k in names])
    expected = numpy_lars(init, grads, 0.5, 0.9, wd, 0.001, excluded={"bias", "gamma"})
    for k in names:
        np.testing.assert_allclose(variables[k].numpy(), expected[k], rtol=1e-5, atol=1e-7)
    # The adapted kernel moves far less than plain momentum SGD would move it.
    assert np.abs(variables["kernel"].numpy() - init["kernel"]).max() < 0.05


def test_lars_is_a_keras_optimizer_with_schedule():
    import keras

    schedule = keras.optimizers.schedules.PolynomialDecay(1.0, 10, 0.0)
    optimizer = LARS(schedule, weight_decay=1e-4)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    v = tf.Variable(np.ones(3, np.float32))
    optimizer.apply_gradients([(tf.ones(3), v)])
    assert int(optimizer.iterations) == 1 and float(v[0]) < 1.0


def test_reference_momentum_is_nesterov_sgd():
    """google-research/simclr's `--optimizer=momentum` is Keras SGD with Nesterov
    momentum: v <- m v - lr g, w <- w + m v - lr g (no weight decay in the update;
    the reference adds its L2 term to the loss)."""
    import numpy as np
    import tensorflow as tf

    from simclr_tf.optim.optimizers import build_optimizer

    lr, m = 0.1, 0.9
    grads = [np.array([0.5, -1.0], np.float32), np.array([0.25, 2.0], np.float32)]
    w0 = np.array([1.0, 2.0], np.float32)
    for mode, nesterov in (("reference", True), ("decoupled", False)):
        variable = tf.Variable(w0)
        optimizer = build_optimizer("momentum", lr, m, weight_decay=0.0, mode=mode)
        w, v = w0.astype(np.float64), np.zeros(2)
        for g in grads:
            optimizer.apply([tf.constant(g)], [variable])
            v = m * v - lr * g
            w = w + (m * v - lr * g if nesterov else v)
        np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6, err_msg=mode)
