"""The notebook front door: `import simclr_tf` exposes the public names lazily, its
Usage block runs as written, and a hand-built model is trained as the paper trains it."""

import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import simclr_tf

from conftest import REPO


def test_import_is_cheap_and_names_load_on_first_use():
    code = (
        "import sys, simclr_tf; heavy = 'tensorflow' in sys.modules; "
        "simclr_tf.nt_xent; print(heavy, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.stdout.split() == ["False", "True"]


def test_every_public_name_resolves_and_unknown_names_fail():
    for name in simclr_tf.__all__:
        assert getattr(simclr_tf, name) is not None
    assert set(simclr_tf.__all__) <= set(dir(simclr_tf))
    from simclr_tf.models.step_models import PretrainModel

    assert simclr_tf.PretrainModel is PretrainModel
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(simclr_tf, "nope")  # noqa: B009  (the attribute protocol under test)


def _usage_code():
    lines = simclr_tf.__doc__.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage")) + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block)


def test_the_usage_block_runs_and_its_export_serves(cifar_data_dir, tmp_path):
    code = _usage_code()
    assert 8 <= len([l for l in code.splitlines() if l.strip()]) <= 14
    # Pointed at the local CIFAR-10 (a slice, so the shuffle buffer fills fast), with
    # a small batch, 2 steps and a temporary export directory; nothing else changes.
    code = code.replace(
        'st.open_source("cifar10")', f'st.open_source("cifar10", data_dir={cifar_data_dir!r})'
    )
    code = code.replace('"train"', '"train[:512]"')
    code, count = re.subn(
        r"batch, steps, export_dir = .*",
        f"batch, steps, export_dir = 16, 2, {str(tmp_path / 'export')!r}",
        code,
    )
    assert count == 1
    namespace = {}
    exec(compile(code, "simclr_tf.__doc__", "exec"), namespace)
    model = namespace["model"]
    assert int(model.optimizer.iterations.numpy()) == 2
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    images = tf.random.stateless_uniform([3, 32, 32, 3], [1, 2])
    out = served(images=images)
    assert out["final_avg_pool"].shape == (3, 512) and out["proj_head_output"].shape == (3, 128)
    np.testing.assert_allclose(
        out["final_avg_pool"].numpy(), model(images)["final_avg_pool"].numpy(), rtol=1e-4, atol=1e-5
    )


def _hand_built(num_classes=10):
    return simclr_tf.PretrainModel(
        simclr_tf.resnet(18, 0.125, cifar_stem=True, input_shape=(16, 16, 3)),
        simclr_tf.ProjectionHead(num_layers=2),
        lambda z1, z2: simclr_tf.nt_xent(z1, z2, temperature=0.5),
        num_classes,
    )


@pytest.mark.parametrize("optimizer", ["lars", "adamw"])
def test_compile_keeps_bn_bias_and_heads_out_of_weight_decay(optimizer):
    model = _hand_built()
    model(tf.zeros([1, 16, 16, 3]))
    opt = (
        simclr_tf.LARS(0.1, weight_decay=1e-4)
        if optimizer == "lars"
        else keras.optimizers.AdamW(0.1, weight_decay=1e-4)
    )
    model.compile(optimizer=opt)
    decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    kept = {v.path for v in model.trainable_variables} - decayed
    assert all(re.search(r"/(gamma|beta|bias)$", p) or "/probe/" in p for p in kept)
    assert decayed and all(p.endswith("/kernel") and "/probe/" not in p for p in decayed)
    # Every BN layer's gamma (ones at init, so LARS would adapt it) is among the kept.
    assert sum(p.endswith("/gamma") for p in kept) == sum(
        isinstance(l, keras.layers.BatchNormalization)
        for l in simclr_tf.keras_compat.all_sublayers(model)
    )
    assert any("/probe/" in p for p in kept)


def test_lars_leaves_an_excluded_variable_plain_momentum_sgd():
    """The exclusions change the update: an excluded BN gamma moves by lr * grad (SGD),
    a decayed kernel by the trust-ratio-scaled step (LARS), checked against numpy."""
    model = _hand_built(num_classes=0)
    model(tf.zeros([1, 16, 16, 3]))
    model.compile(optimizer=simclr_tf.LARS(0.5, momentum=0.0, weight_decay=1e-3, eeta=0.01))
    gamma = next(v for v in model.trainable_variables if v.path.endswith("/gamma"))
    kernel = next(v for v in model.trainable_variables if v.path.endswith("/kernel"))
    rng = np.random.default_rng(0)
    images = rng.random((8, 16, 16, 3)).astype(np.float32)
    batch = {"view1": images, "view2": images[::-1].copy(), "label": np.zeros(8, np.int64)}
    data = tf.data.Dataset.from_tensors(batch)
    with tf.GradientTape() as tape:
        out = model(tf.concat([batch["view1"], batch["view2"]], 0), training=True)
        z1, z2 = tf.split(out["proj_head_output"], 2)
        loss, _ = model.contrastive_loss(z1, z2)
    g_gamma, g_kernel = tape.gradient(loss, [gamma, kernel])
    w_gamma, w_kernel = gamma.numpy(), kernel.numpy()
    model.fit(data, epochs=1, verbose=0)  # the same forward pass (BN batch statistics)
    np.testing.assert_allclose(gamma.numpy(), w_gamma - 0.5 * g_gamma.numpy(), rtol=1e-4, atol=1e-6)
    g = g_kernel.numpy() + 1e-3 * w_kernel
    trust = 0.01 * np.linalg.norm(w_kernel) / np.linalg.norm(g)
    np.testing.assert_allclose(kernel.numpy(), w_kernel - 0.5 * trust * g, rtol=1e-4, atol=1e-7)


def test_compile_refuses_an_optimizer_that_is_already_built():
    model = _hand_built()
    model(tf.zeros([1, 16, 16, 3]))
    opt = simclr_tf.LARS(0.1)
    opt.build(model.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        model.compile(optimizer=opt)


def test_public_functions_and_classes_document_their_arguments():
    import dataclasses
    import inspect

    for name in simclr_tf.__all__:
        value = getattr(simclr_tf, name)
        if (
            not callable(value)
            or dataclasses.is_dataclass(value)
            or (inspect.isclass(value) and issubclass(value, Exception))
        ):
            continue  # records document their fields; errors their meaning
        doc = inspect.getdoc(value) or ""
        assert "Args:" in doc, f"{name} has no Args: section"
        if inspect.isfunction(value):
            assert "Returns:" in doc, f"{name} has no Returns: section"
