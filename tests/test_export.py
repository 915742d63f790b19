"""Export: reloaded SavedModel equals the in-memory model; Keras 3 and TF Hub reuse."""

import io
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf import export
from simclr_tf.augment import image_ops
from simclr_tf.config import Config, DataConfig, ModelConfig, RunConfig
from simclr_tf.models import builders

SIZE = 16


def _config(mode):
    return Config(
        run=RunConfig(mode=mode),
        data=DataConfig(image_size=SIZE),
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2),
    )


def _images(n=4, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def pretrain_export(tmp_path_factory):
    model = builders.pretrain_model(_config("pretrain"), num_classes=10)
    path = str(tmp_path_factory.mktemp("export") / "pretrain")
    export.export_saved_model(model, SIZE, path)
    return model, path


def test_serving_default_matches_the_model(pretrain_export):
    model, path = pretrain_export
    loaded = tf.saved_model.load(path)
    assert {"serving_default", "serving_bytes", "features_training"} <= set(loaded.signatures)
    images = _images()
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    expected = model(images, training=False)
    assert set(served) == {
        "final_avg_pool",
        "block_group1",
        "block_group2",
        "block_group3",
        "block_group4",
        "proj_head_output",
        "logits",
        "probabilities",
    }
    # A pretraining run's classifier is its linear probe.
    expected = dict(expected, logits=expected["probe_logits"])
    logits = expected["logits"].numpy()
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    expected["probabilities"] = softmax / softmax.sum(1, keepdims=True)
    for key, value in served.items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(expected[key]), atol=1e-5)


def test_serving_bytes_decodes_and_preprocesses_in_graph(pretrain_export):
    model, path = pretrain_export
    loaded = tf.saved_model.load(path)
    pixels = (_images(1, 3)[0] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    served = loaded.signatures["serving_bytes"](encoded_images=tf.constant([buffer.getvalue()]))
    reference = image_ops.eval_view(tf.constant(pixels), SIZE, SIZE)[None]
    np.testing.assert_allclose(
        served["final_avg_pool"].numpy(),
        model(reference, training=False)["final_avg_pool"].numpy(),
        atol=1e-5,
    )


def test_classifier_export_has_logits_and_probabilities(tmp_path):
    model = builders.classifier_model(_config("finetune"), num_classes=7)
    export.export_saved_model(model, SIZE, str(tmp_path / "clf"))
    served = tf.saved_model.load(str(tmp_path / "clf")).signatures["serving_default"](
        images=tf.constant(_images())
    )
    assert served["logits"].shape == (4, 7)
    np.testing.assert_allclose(served["probabilities"].numpy().sum(1), 1.0, atol=1e-5)


def test_keras3_tfsmlayer_loads_it(pretrain_export):
    model, path = pretrain_export
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    images = _images()
    out = layer(images)
    np.testing.assert_allclose(
        out["final_avg_pool"], model(images, training=False)["final_avg_pool"], atol=1e-5
    )


def test_hub_load_call_and_bn_follows_training_flag(pretrain_export):
    import tensorflow_hub as hub

    model, path = pretrain_export
    module = hub.load(path)
    images = tf.constant(_images())
    np.testing.assert_allclose(
        module(images, training=False).numpy(),
        model(images, training=False)["final_avg_pool"].numpy(),
        atol=1e-5,
    )
    moving = [v for v in module.variables if "moving_mean" in v.name]
    assert moving and len(module.trainable_variables) < len(module.variables)
    before = [v.numpy().copy() for v in moving]
    module(images, training=False)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, moving))
    module(images, training=True)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, moving))
    assert module.regularization_losses == [] or list(module.regularization_losses) == []


def test_hub_keras_layer_fine_tunes(pretrain_export, tmp_path):
    # hub.KerasLayer is a Keras 2 layer (tf-keras); run it in its own process so the
    # Keras 2 and Keras 3 runtimes do not share global state with other tests.
    _, path = pretrain_export
    script = f"""
import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
layer = hub.KerasLayer({path!r}, trainable=True)
model = tf_keras.Sequential([tf_keras.Input(({SIZE}, {SIZE}, 3)), layer,
                             tf_keras.layers.Dense(3)])
model.compile(tf_keras.optimizers.SGD(0.05),
              tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.random((32, {SIZE}, {SIZE}, 3)).astype(np.float32)
y = (x.mean(axis=(1, 2, 3)) * 30).astype(int) % 3
before = [v.numpy().copy() for v in layer.trainable_weights]
first = model.evaluate(x, y, verbose=0)
model.fit(x, y, epochs=8, batch_size=32, verbose=0)
last = model.evaluate(x, y, verbose=0)
changed = sum(not np.allclose(b, v.numpy()) for b, v in zip(before, layer.trainable_weights))
print("RESULT", first, last, changed, len(before))
"""
    result = subprocess.run(
        ["python", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT")]
    assert line, result.stderr[-3000:]
    first, last, changed, total = line[0].split()[1:]
    assert float(last) < float(first)
    assert int(changed) > 0 and int(total) > 0


def test_export_mode_from_a_training_run(tmp_path, cifar_data_dir):
    from simclr_tf import train
    from simclr_tf.config import OptimConfig

    run_dir = tmp_path / "run"
    config = Config(
        run=RunConfig(
            mode="pretrain",
            model_dir=str(run_dir),
            train_steps=2,
            checkpoint_steps=2,
            eval_steps=1,
            knn_bank_size=64,
            strategy="one_device",
            precision="float32",
        ),
        data=DataConfig(
            dataset="cifar10",
            data_dir=cifar_data_dir,
            image_size=32,
            batch_size=8,
            shuffle_buffer=64,
            train_split="train[:1000]",
            eval_split="test[:500]",
        ),
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2),
        optim=OptimConfig(warmup_epochs=0),
    )
    model, _ = train.run(config)
    result = export.export_from_config(
        Config(
            run=RunConfig(
                mode="export",
                model_dir=str(run_dir),
                export_dir=str(tmp_path / "exported"),
                export_tflite=True,
            )
        )
    )
    assert result["image_size"] == 32
    _check_tflite(result, model, cifar_data_dir)
    _check_model_card(result, model)
    loaded = tf.saved_model.load(result["export_dir"])
    images = np.random.default_rng(5).random((2, 32, 32, 3)).astype(np.float32)
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(
        served["proj_head_output"].numpy(),
        model(images, training=False)["proj_head_output"].numpy(),
        atol=1e-5,
    )
    assert not list(tmp_path.glob("exported.tmp-*"))


def _tflite_outputs(path, images):
    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    return runner(images=images)


def _check_tflite(result, model, data_dir):
    """Both LiteRT files against the SavedModel on real CIFAR-10 test images. float32:
    the same arithmetic in another order, 1e-4 of the largest output. int8 (dynamic
    range): each weight rounded to 1/127 of its channel's largest, an error of up to
    0.4% per weight; through 18 layers that moves h by a few percent, so the test asks
    for cosine >= 0.98 per image and a relative error below 0.2."""
    from simclr_tf.data import open_source

    source = open_source("cifar10", data_dir=data_dir)
    batch = next(iter(source.load("test", False).take(16).batch(16)))
    images = (tf.cast(batch["image"], tf.float32) / 255.0).numpy()
    saved = tf.saved_model.load(result["export_dir"]).signatures["serving_default"]
    reference = {k: v.numpy() for k, v in saved(images=tf.constant(images)).items()}
    sizes = {}
    for kind, entry in result["tflite"].items():
        out = _tflite_outputs(entry["path"], images)
        assert set(out) == {"final_avg_pool", "proj_head_output"}
        sizes[kind] = os.path.getsize(entry["path"])
        assert sizes[kind] == entry["bytes"]
        for key, value in out.items():
            ref = reference[key]
            if kind == "float32":
                assert np.abs(value - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), key
            else:
                cos = (
                    (value * ref).sum(1)
                    / np.linalg.norm(value, axis=1)
                    / np.linalg.norm(ref, axis=1)
                )
                assert cos.min() >= 0.98, (key, cos.min())
                assert np.linalg.norm(value - ref) / np.linalg.norm(ref) < 0.2, key
    # int8 weights: about a quarter of the float file (activations stay float).
    assert sizes["int8_dynamic_range"] < 0.4 * sizes["float32"], sizes


def _check_model_card(result, model):
    import json

    card = json.loads(open(os.path.join(result["export_dir"], "model_card.json")).read())
    assert card["architecture"]["encoder"] == "ResNet-18 0.125x"
    params = sum(int(np.prod(v.shape)) for v in model.variables)
    assert card["architecture"]["parameters"] == params
    assert card["input"]["shape"] == [None, 32, 32, 3]
    assert "final_avg_pool" in card["signatures"]["serving_default"]
    assert card["training"]["steps"] == 2 and card["training"]["mode"] == "pretrain"
    assert "knn_acc" in card["accuracy"]
    assert set(card["tflite"]) == {"float32", "int8_dynamic_range"}
    text = open(result["model_card"]).read()
    assert "ResNet-18 0.125x" in text and f"{params:,}" in text


def test_saved_model_cli_runs_the_serving_signature(pretrain_export, tmp_path):
    # saved_model_cli loads through the TF1 session path, as TF Serving does.
    model, path = pretrain_export
    images = _images(2, 9)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [
            "saved_model_cli",
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path}/images.npy",
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "out" / "final_avg_pool.npy")
    np.testing.assert_allclose(served, model(images, training=False)["final_avg_pool"], atol=1e-5)
