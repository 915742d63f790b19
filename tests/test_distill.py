"""SimCLRv2's distillation step: the loss against numpy, a frozen teacher, a student
that moves toward it, no labels read at label weight 0, and the mode end to end (run
directory and SavedModel teachers, export of the student)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf import export, losses, teacher, train
from simclr_tf.config import (
    Config,
    ConfigError,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)
from simclr_tf.data import DataError, open_source, pipeline
from simclr_tf.models import builders

SIZE = 32


def _numpy_distillation(teacher_logits, student_logits, tau):
    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    log_student = np.log(softmax(student_logits / tau))
    return float(np.mean(-np.sum(softmax(teacher_logits / tau) * log_student, axis=1)))


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 2.0])
def test_distillation_loss_is_the_tempered_cross_entropy(tau):
    rng = np.random.default_rng(int(tau * 10))
    t, s = rng.normal(size=(6, 10)) * 3, rng.normal(size=(6, 10)) * 3
    got = float(losses.distillation_loss(tf.constant(t), tf.constant(s), tau))
    assert got == pytest.approx(_numpy_distillation(t, s, tau), rel=1e-5)
    # Its gradient w.r.t. the student is (softmax(s/tau) - softmax(t/tau)) / (tau B).
    s_var = tf.Variable(s, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = losses.distillation_loss(tf.constant(t, tf.float32), s_var, tau)
    grad = tape.gradient(loss, s_var).numpy()
    p_s = tf.nn.softmax(s / tau).numpy()
    p_t = tf.nn.softmax(t / tau).numpy()
    np.testing.assert_allclose(grad, (p_s - p_t) / (tau * 6), rtol=1e-4, atol=1e-6)


def _config(model_dir, data_dir, mode, **kw):
    distill = kw.pop("distill", DistillConfig())
    model = kw.pop("model", ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2))
    return Config(
        run=RunConfig(
            mode=mode,
            model_dir=str(model_dir),
            checkpoint_steps=3,
            eval_steps=1,
            strategy="one_device",
            precision="float32",
            **kw,
        ),
        data=DataConfig(
            dataset="cifar10",
            data_dir=data_dir,
            batch_size=16,
            eval_batch_size=64,
            shuffle_buffer=64,
            train_split="train[:256]",
            eval_split="test[:64]",
        ),
        model=model,
        optim=OptimConfig(
            optimizer="momentum", learning_rate=0.1, warmup_epochs=0.0, weight_decay=0.0
        ),
        distill=distill,
    )


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, cifar_data_dir):
    """A small supervised classifier: the teacher of the tests below."""
    root = tmp_path_factory.mktemp("teacher")
    train.run(_config(root / "run", cifar_data_dir, "supervised", train_steps=6))
    return root / "run"


def test_teacher_is_frozen_and_the_student_moves_toward_it(teacher_run, cifar_data_dir):
    saved = train.run_dirs.required_config(str(teacher_run))
    logits_fn, classes = teacher.load_teacher(str(teacher_run), SIZE)
    assert classes == 10
    teacher_model = logits_fn.model
    # A confident teacher, so there is something to move toward: its classifier given
    # random weights (it is frozen all the same).
    rng = np.random.default_rng(0)
    head = teacher_model.linear_head
    head.kernel.assign(rng.normal(size=head.kernel.shape).astype(np.float32) * 20)
    before = [v.numpy().copy() for v in teacher_model.weights]  # incl. BN moving stats
    config = _config(
        "/tmp/unused",
        cifar_data_dir,
        "distill",
        distill=DistillConfig(str(teacher_run), distill_temperature=1.0),
    )
    student = builders.distillation_model(config, classes, logits_fn)
    student.compile(optimizer=keras.optimizers.SGD(0.5))
    assert not {id(v) for v in teacher_model.weights} & {id(v) for v in student.weights}
    source = open_source("cifar10", cifar_data_dir)
    batch = next(iter(pipeline.eval_dataset(source, "train[:64]", saved.data, 64)))
    images = batch["image"]

    def kl():
        t = logits_fn(images).numpy()
        s = student(images, training=False)["logits"].numpy()
        return _numpy_distillation(t, s, 1.0) - _numpy_distillation(t, t, 1.0)

    start = kl()
    assert start > 0.1
    for _ in range(10):
        logs = student.train_on_batch(
            {"image": images, "label": -np.ones(64, np.int64)}, return_dict=True
        )
    assert kl() < 0.7 * start
    assert set(logs) >= {"loss", "distill_loss", "teacher_agreement"}
    assert "label_loss" not in logs
    for old, new in zip(before, teacher_model.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_label_weight_zero_reads_no_labels(tmp_path, monkeypatch):
    # An unlabeled folder: no labels exist, and the label index is never read.
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    source = open_source(f"folder:{tmp_path}")
    monkeypatch.setattr(type(source), "index", lambda *a: pytest.fail("labels were read"))
    data = DataConfig(image_size=SIZE, batch_size=4, shuffle_buffer=8)
    batch = next(iter(pipeline.distill_dataset(source, "train", data, 4)))
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert np.all(batch["label"].numpy() == -1)


def test_labels_outside_the_subset_are_hidden(cifar_data_dir):
    source = open_source("cifar10", cifar_data_dir)
    ids, labels = source.index("train[:64]")
    keep = np.array(sorted(ids[:10]), dtype=object)
    data = DataConfig(image_size=SIZE, batch_size=64, shuffle_buffer=1, deterministic=True)
    batch = next(
        iter(
            pipeline.distill_dataset(
                source, "train[:64]", data, 64, labelled=keep, read_labels=True
            )
        )
    )
    shown = batch["label"].numpy()
    assert np.sum(shown >= 0) == 10 and set(shown[shown >= 0]) <= set(labels[:10])


def test_distill_mode_end_to_end_from_a_run_and_from_a_saved_model(
    teacher_run, tmp_path, cifar_data_dir
):
    distill = DistillConfig(str(teacher_run), distill_temperature=0.5, distill_label_weight=1.0)
    config = dataclasses.replace(
        _config(tmp_path / "student", cifar_data_dir, "distill", train_steps=3, distill=distill),
        data=dataclasses.replace(_config("x", cifar_data_dir, "distill").data, label_fraction=0.1),
    )
    model, results = train.run(config)
    _, labels = open_source("cifar10", cifar_data_dir).index("train[:256]")
    per_class = [max(1, round(0.1 * np.sum(labels == c))) for c in range(10)]
    assert results["global_step"] == 3 and results["labelled_examples"] == sum(per_class)
    assert 0 <= results["eval_accuracy"] <= 1 and "teacher_eval_accuracy" in results
    assert (tmp_path / "student" / "label_subset.txt").exists()
    # The student exports like every run, and the export can teach in turn.
    exported = export.export_from_config(
        dataclasses.replace(
            config,
            run=dataclasses.replace(config.run, mode="export", export_dir=str(tmp_path / "export")),
        )
    )
    served = tf.saved_model.load(exported["export_dir"]).signatures["serving_default"]
    images = tf.random.stateless_uniform([2, SIZE, SIZE, 3], [3, 4])
    np.testing.assert_allclose(
        served(images=images)["logits"].numpy(),
        model(images)["logits"].numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    small = ModelConfig(depth=18, width_multiplier=0.0625, num_proj_layers=2)
    config = _config(
        tmp_path / "small",
        cifar_data_dir,
        "distill",
        train_steps=3,
        model=small,
        distill=DistillConfig(exported["export_dir"]),
    )
    _, results = train.run(config)
    assert results["global_step"] == 3 and results["labelled_examples"] == 0
    assert json.loads((tmp_path / "small" / "config.json").read_text())["run"]["mode"] == (
        "distill"
    )


def test_bad_teachers_and_settings_fail_in_one_line(teacher_run, tmp_path, cifar_data_dir):
    pre = tmp_path / "pre"
    pre.mkdir()
    train.run_dirs.write_json_atomic(
        str(pre / "config.json"), json.loads(_config(pre, cifar_data_dir, "pretrain").to_json())
    )
    with pytest.raises(ConfigError, match="pretrain run, which has no classifier"):
        teacher.load_teacher(str(pre), SIZE)
    with pytest.raises(ConfigError, match="takes 32 px images, the student 64 px"):
        teacher.load_teacher(str(teacher_run), 64)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        teacher.load_teacher(str(tmp_path / "nothing"), SIZE)
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(folder / f"{i}.png")
    config = _config(
        tmp_path / "s",
        None,
        "distill",
        train_steps=1,
        distill=DistillConfig(str(teacher_run), distill_label_weight=1.0),
    )
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, dataset=f"folder:{folder}", train_split="train", eval_split=None
        ),
    )
    with pytest.raises(DataError, match="needs labels"):
        train.run(config)


def test_a_pretraining_export_as_teacher_is_named_in_a_warning(tmp_path, caplog):
    """Its logits are the online probe's, trained on every label."""
    import functools
    import logging

    from simclr_tf import LARS
    from simclr_tf.models import heads, resnet, step_models

    pretrained = step_models.PretrainModel(
        resnet.resnet(18, 0.125, cifar_stem=True, input_shape=(32, 32, 3)),
        heads.ProjectionHead(num_layers=2, out_dim=8),
        functools.partial(losses.nt_xent, temperature=0.5),
        num_classes=10,
    )
    pretrained(tf.zeros([1, 32, 32, 3]))
    pretrained.compile(optimizer=LARS(0.1))
    export.export_saved_model(pretrained, 32, str(tmp_path / "pretrained"))
    with caplog.at_level(logging.WARNING):
        _, classes = teacher.load_teacher(str(tmp_path / "pretrained"), 32)
    assert classes == 10
    assert any("pretraining run's export" in r.getMessage() for r in caplog.records)


def test_labelled_distillation_loss_is_the_weighted_sum_over_labelled_rows(
    teacher_run, cifar_data_dir
):
    """With a labelled term the logged losses equal numpy's: the tempered cross-entropy
    to the teacher on every row, the label cross-entropy on the labelled rows only, and
    their weighted sum (weight decay 0; learning rate 0 so the step's forward pass is
    the one recomputed here)."""
    logits_fn, classes = teacher.load_teacher(str(teacher_run), SIZE)
    config = _config(
        "/tmp/unused",
        cifar_data_dir,
        "distill",
        distill=DistillConfig(str(teacher_run), distill_temperature=2.0, distill_label_weight=0.5),
    )
    student = builders.distillation_model(config, classes, logits_fn)
    student.compile(optimizer=keras.optimizers.SGD(0.0))
    source = open_source("cifar10", cifar_data_dir)
    saved = train.run_dirs.required_config(str(teacher_run))
    batch = next(iter(pipeline.eval_dataset(source, "train[:32]", saved.data, 32)))
    images = batch["image"]
    labels = batch["label"].numpy().copy()
    labels[::3] = -1  # a third of the rows unlabelled
    teacher_logits = logits_fn(images).numpy()
    student_logits = student(images, training=True)["logits"].numpy()
    logs = student.train_on_batch({"image": images, "label": labels}, return_dict=True)
    distill = _numpy_distillation(teacher_logits, student_logits, 2.0)
    shown = labels >= 0
    log_p = student_logits - np.log(np.exp(student_logits).sum(1, keepdims=True))
    label_loss = float(-np.mean(log_p[shown, labels[shown]]))
    accuracy = float(np.mean(student_logits[shown].argmax(1) == labels[shown]))
    assert float(logs["distill_loss"]) == pytest.approx(distill, rel=1e-4)
    assert float(logs["label_loss"]) == pytest.approx(label_loss, rel=1e-4)
    assert float(logs["accuracy"]) == pytest.approx(accuracy)
    assert float(logs["loss"]) == pytest.approx(distill + 0.5 * label_loss, rel=1e-4)
