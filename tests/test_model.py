"""Models: decay exclusion by object, freezing, masked loss, a step that learns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import keras_compat
from simclr_tf.config import Config, DataConfig, ModelConfig, RunConfig
from simclr_tf.models import builders, step_models
from simclr_tf.optim import optimizers


def _config(mode="pretrain", **model):
    return Config(
        run=RunConfig(mode=mode),
        data=DataConfig(image_size=16),
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2, **model),
    )


def test_masked_cross_entropy_matches_numpy_and_ignores_unlabeled():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 3, -1, 2, -1, 1])
    term = step_models.masked_cross_entropy(labels, logits)
    valid = labels >= 0
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean(log_p[valid, labels[valid]])
    assert float(term.loss) == pytest.approx(expected, rel=1e-5)  # one replica: the mean
    assert float(term.mean_loss) == pytest.approx(expected, rel=1e-5)
    assert float(term.accuracy) == pytest.approx(np.mean(logits[valid].argmax(1) == labels[valid]))
    assert float(term.count) == 4
    none = step_models.masked_cross_entropy(np.full(6, -1), logits)  # zero-safe
    assert [float(x) for x in none] == [0.0, 0.0, 0.0, 0.0]


def test_a_label_weighs_the_same_whatever_replica_holds_it():
    """Two replicas, one holding 1 labelled row and the other 3: the summed gradients
    of the step's scaled loss equal the gradient of the mean over all 4 labelled rows
    on one device (a per-replica mean would weigh the lone label 3x)."""
    from conftest import cpu_devices

    rng = np.random.default_rng(1)
    features = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([2, -1, -1, -1, 0, 1, -1, 3])  # replica 0: rows 0-3, replica 1: 4-7
    kernel = rng.normal(size=(5, 4)).astype(np.float32)
    w = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        single = step_models.masked_cross_entropy(labels, features @ w).loss
    expected = tape.gradient(single, w).numpy()
    strategy = keras_compat.mirrored_strategy(cpu_devices(2))
    with strategy.scope():
        wd = tf.Variable(kernel)

    def shard(x):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                x[4 * ctx.replica_id_in_sync_group : 4 * ctx.replica_id_in_sync_group + 4]
            )
        )

    @tf.function
    def step(f, y):
        with tf.GradientTape() as tape:
            scaled = step_models.masked_cross_entropy(y, f @ wd).loss / 2  # the step's 1/R
        g = tape.gradient(scaled, wd)
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, g)

    grads = strategy.run(step, args=(shard(features), shard(labels)))
    got = strategy.experimental_local_results(grads)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_no_decay_variables_are_bn_bias_and_classifier():
    model = builders.pretrain_model(_config(), num_classes=10)
    excluded = {id(v) for v in step_models.no_decay_variables(model)}
    for layer in keras_compat.all_sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert id(layer.gamma) in excluded
            assert layer.beta is None or id(layer.beta) in excluded
        if isinstance(layer, keras.layers.Conv2D):
            assert id(layer.kernel) not in excluded
    assert id(model.probe.kernel) in excluded


def test_pretrain_step_lowers_the_loss_on_a_fixed_batch():
    model = builders.pretrain_model(_config(), num_classes=10)
    optimizer = optimizers.build_optimizer("lars", 0.5, 0.9, 0.0)
    model.compile(optimizer=optimizer)
    rng = np.random.default_rng(1)
    images = rng.random((16, 16, 16, 3)).astype(np.float32)
    batch = {
        "view1": images,
        "view2": np.clip(images + 0.05 * rng.normal(size=images.shape), 0, 1).astype(np.float32),
        "label": rng.integers(0, 10, 16),
    }
    first = model.train_on_batch(batch, return_dict=True)
    for _ in range(15):
        last = model.train_on_batch(batch, return_dict=True)
    assert last["contrast_loss"] < first["contrast_loss"]
    assert last["probe_loss"] < first["probe_loss"]


def test_linear_eval_freezes_encoder_and_bn_statistics():
    model = builders.classifier_model(_config("linear_eval"), num_classes=5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.encoder.variables]
    batch = {
        "image": np.random.default_rng(2).random((8, 16, 16, 3)).astype(np.float32),
        "label": np.arange(8) % 5,
    }
    model.train_on_batch(batch)
    for old, new in zip(before, model.encoder.variables):
        np.testing.assert_array_equal(old, new.numpy())  # weights and moving stats
    assert np.any(model.linear_head.kernel.numpy() != 0)


def test_fine_tune_after_block_freezes_the_early_layers():
    model = builders.classifier_model(_config("finetune", fine_tune_after_block=2), 5)
    names = [l.name for l in model.encoder.layers]
    cut = names.index("block_group2")
    assert all(not l.trainable for l in model.encoder.layers[: cut + 1])
    assert any(l.trainable and l.weights for l in model.encoder.layers[cut + 1 :])


@pytest.mark.parametrize("selector", [0, 1])
def test_classifier_from_head_layer_uses_the_projection_head(selector):
    """From head layer 1 the logits move with the head's first kernel; from h they do
    not (the head's width equals h's, so shapes cannot tell the two apart)."""
    model = builders.classifier_model(_config("finetune", ft_proj_selector=selector), 5)
    rng = np.random.default_rng(3)
    model.linear_head.kernel.assign(rng.normal(size=model.linear_head.kernel.shape))
    images = tf.constant(rng.random((4, 16, 16, 3)).astype(np.float32))
    before = model(images)["logits"].numpy()
    probe = builders.pretrain_model(_config(), 0).projection_head  # a head to perturb
    head = model.projection_head if selector else probe
    kernel = head.layers_[0].dense.kernel
    kernel.assign(kernel * 3.0 + 0.1)
    after = model(images)["logits"].numpy()
    assert (not np.allclose(before, after, atol=1e-4)) == bool(selector)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_classifier_reads_exactly_the_selected_head_layer(layer):
    model = builders.classifier_model(_config("finetune", ft_proj_selector=layer), 5)
    rng = np.random.default_rng(layer)
    head = model.linear_head
    head.kernel.assign(rng.normal(size=head.kernel.shape).astype(np.float32))
    images = tf.constant(rng.random((4, 16, 16, 3)).astype(np.float32))
    h = model.encoder(images, training=False)["final_avg_pool"]
    # Independent of the model's own call: h, then the head's layers one by one.
    outputs = [h]
    for dense_bn in model.projection_head.layers_ if model.projection_head else []:
        outputs.append(dense_bn(outputs[-1], training=False))
    assert len(outputs) == (1 if layer == 0 else 3)
    logits = model(images, training=False)["logits"].numpy()
    for k, features in enumerate(outputs):
        if features.shape[-1] != head.kernel.shape[0]:
            continue  # the output layer (128-d) cannot feed this head
        expected = head(features).numpy()
        if k == layer:
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        else:  # any other layer gives other logits
            assert not np.allclose(logits, expected, atol=1e-3)


def test_checkpoints_hold_every_model_variable(tmp_path):
    from simclr_tf import checkpoints
    from simclr_tf.models import builders as b

    model = b.pretrain_model(_config(), num_classes=10)
    model.compile(optimizer=optimizers.build_optimizer("lars", 0.1, 0.9, 0.0))
    model.optimizer.build(model.trainable_variables)
    checkpoints.CheckpointManager(checkpoints.checkpoint_items(model), str(tmp_path)).save(1)
    saved = {tuple(shape) for _, shape in tf.train.list_variables(str(tmp_path))}
    assert len(tf.train.list_variables(str(tmp_path))) >= len(model.variables)
    # Every head variable is restorable into a fresh classifier built the same way.
    clf = b.classifier_model(_config("finetune", ft_proj_selector=1), 10)
    for v in clf.projection_head.variables:
        v.assign(tf.zeros_like(v))
    checkpoints.restore_parts(
        {"encoder": clf.encoder, "projection_head": clf.projection_head}, str(tmp_path)
    )
    for mine, theirs in zip(model.projection_head.variables, clf.projection_head.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for mine, theirs in zip(model.encoder.variables, clf.encoder.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # Every variable's value (BN statistics and optimizer slots included) is stored.
    reader = tf.train.load_checkpoint(str(tmp_path))
    stored = [reader.get_tensor(k) for k, _ in tf.train.list_variables(str(tmp_path))]
    for v in list(model.variables) + list(model.optimizer.variables):
        value = np.asarray(v.numpy())
        assert tuple(value.shape) in saved, v.path
        assert any(np.shape(t) == value.shape and np.array_equal(t, value) for t in stored), v.path


def test_keras_evaluate_agrees_with_the_project_evaluation():
    from simclr_tf import evaluation

    model = builders.classifier_model(_config("finetune"), num_classes=5)
    model.linear_head.kernel.assign(
        np.random.default_rng(3).normal(size=model.linear_head.kernel.shape)
    )
    model.compile()
    rng = np.random.default_rng(4)
    data = {
        "image": rng.random((10, 16, 16, 3)).astype(np.float32),
        "label": np.array([0, 1, 2, 3, 4, -1, 0, 1, 2, 3]),
    }
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(4)  # short last batch
    keras_logs = model.evaluate(dataset, verbose=0, return_dict=True)
    reference = evaluation.classification_metrics(model, dataset)
    assert keras_logs["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-6)
    assert keras_logs["loss"] == pytest.approx(reference["loss"], rel=1e-5)
