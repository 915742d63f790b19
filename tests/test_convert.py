"""Reference SimCLR checkpoints (shared/data/reference_checkpoints, written by
google-research/simclr) converted into simclr_tf: outputs equal the reference code's,
for the TF1 ResNet-18 CIFAR checkpoint and the seeded ResNet-50 1x SK case; every
manifest maps completely; the converted run fine-tunes and exports."""

import dataclasses
import hashlib
import json
import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import checkpoints, convert, reference_layout, train
from simclr_tf.models import resnet

from conftest import REPO, SHARED_TFDS

REFERENCE = pathlib.Path(SHARED_TFDS).parent / "reference_checkpoints"
MANIFESTS = REFERENCE / "manifests"
TOLERANCE = 1e-4  # relative to max(1, |reference|)
R50_STAGES = (
    "block_group1",
    "block_group2",
    "block_group3",
    "block_group4",
    "final_avg_pool",
    "proj_head_output",
)


def _close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, what
    error = np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref)))
    print(f"{what}: max error {error:.2e}")
    assert error <= TOLERANCE, f"{what}: {error:.2e}"
    return error


def _export_config(run, export_dir):
    """The `--mode=export` config of a converted run directory."""
    config = train.run_dirs.required_config(str(run))
    return dataclasses.replace(
        config,
        run=dataclasses.replace(
            config.run, mode="export", model_dir=str(run), export_dir=str(export_dir)
        ),
    )


def manifest(name):
    shapes = {}
    for line in (MANIFESTS / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            shapes[key] = json.loads(shape)
    return shapes


# --- TF1 ResNet-18 CIFAR, a real checkpoint of the reference code --------------------


@pytest.fixture(scope="module")
def converted_r18(tmp_path_factory):
    out = tmp_path_factory.mktemp("r18")
    report = convert.convert(str(REFERENCE / "tf1_r18_cifar"), str(out))
    return out, report


def test_r18_conversion_maps_every_weight_and_skips_only_the_step(converted_r18):
    _, report = converted_r18
    arch = report["architecture"]
    assert (arch["depth"], arch["width_multiplier"], arch["sk_ratio"], arch["cifar_stem"]) == (
        18,
        1.0,
        0.0,
        True,
    )
    assert (arch["num_proj_layers"], arch["proj_out_dim"]) == (3, 128)
    assert report["supervised_classes"] == 10 and report["image_size"] == 32
    assert report["skipped"] == ["global_step"]
    total = len(tf.train.list_variables(str(REFERENCE / "tf1_r18_cifar" / "model.ckpt-1")))
    assert report["mapped_tensors"] == total - 1


def test_r18_outputs_equal_the_reference_code(converted_r18):
    out, _ = converted_r18
    ref = np.load(REFERENCE / "tf1_r18_cifar" / "reference_outputs.npz")
    config = json.loads((out / "config.json").read_text())
    from simclr_tf import config as config_lib

    model = convert.builders.pretrain_model(config_lib.from_dict(config), 10)
    checkpoints.restore_model(model, str(out))
    got = model(tf.constant(ref["inputs"]), training=False)
    for key, ref_key in (
        ("block_group4", "block_group4"),
        ("final_avg_pool", "final_avg_pool"),
        ("proj_head_output", "proj_head_output"),
        ("probe_logits", "logits_sup"),
    ):
        _close(got[key], ref[ref_key], key)
    # The head's hidden layers: ours keeps them after the ReLU.
    hidden = model.projection_head(got["final_avg_pool"], training=False)
    _close(hidden[1], np.maximum(ref["proj_head_nl_0_out"], 0), "head layer 1")
    _close(hidden[2], np.maximum(ref["proj_head_nl_1_out"], 0), "head layer 2")


def test_r18_export_serves_the_reference_outputs(converted_r18, tmp_path):
    out, _ = converted_r18
    ref = np.load(REFERENCE / "tf1_r18_cifar" / "reference_outputs.npz")
    config = _export_config(out, tmp_path / "export")
    from simclr_tf import export

    export.export_from_config(config)
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    got = serve(images=tf.constant(ref["inputs"]))
    _close(got["final_avg_pool"], ref["final_avg_pool"], "served final_avg_pool")
    _close(got["proj_head_output"], ref["proj_head_output"], "served proj_head_output")
    _close(got["logits"], ref["logits_sup"], "served logits")
    _close(got["block_group4"], ref["block_group4"], "served block_group4")


def test_the_converted_run_fine_tunes_from_its_checkpoint(converted_r18, tmp_path, cifar_data_dir):
    """Fine-tuning from the converted run lowers the loss on a fixed batch within a
    few steps: the weights come across as a trainable model."""
    out, _ = converted_r18
    from simclr_tf.config import Config, DataConfig, OptimConfig, RunConfig

    saved = train.run_dirs.required_config(str(out))
    config = Config(
        run=RunConfig(
            mode="finetune",
            model_dir=str(tmp_path / "ft"),
            train_steps=6,
            checkpoint_steps=6,
            init_checkpoint=str(out),
            strategy="one_device",
            precision="float32",
            eval_steps=1,
        ),
        data=DataConfig(
            dataset="cifar10",
            data_dir=cifar_data_dir,
            batch_size=32,
            eval_batch_size=32,
            train_split="train[:32]",
            eval_split="test[:32]",
            deterministic=True,
        ),
        model=dataclasses.replace(saved.model, ft_proj_selector=0),
        optim=OptimConfig(
            optimizer="momentum", learning_rate=0.1, warmup_epochs=0, weight_decay=0.0
        ),
    )
    losses = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    model, results = train.run(config, extra_callbacks=[Losses()])
    assert results["global_step"] == 6
    assert losses[-1] < losses[0]
    # It started from the reference's weights: after 6 small steps the stem kernel is
    # still within a few percent of the reference checkpoint's (a fresh init is not).
    reference = tf.train.load_checkpoint(str(REFERENCE / "tf1_r18_cifar" / "model.ckpt-1"))
    stem = reference.get_tensor("base_model/conv2d/kernel")
    tuned = model.encoder.get_layer("conv2d").kernel.numpy()
    assert np.linalg.norm(tuned - stem) / np.linalg.norm(stem) < 0.05


# --- ResNet-50 1x SK, weights rebuilt from the shared spec ----------------------------


def synthetic_weights():
    """The spec of synthetic_r50_1x_sk1/README.md: one float64 draw per variable in
    manifest order, cast to float32."""
    rng = np.random.default_rng(1)
    weights = {}
    for key, shape in manifest("tf1_r50_1x_sk1.txt").items():
        if key == "global_step" or key.endswith("/Momentum"):
            continue
        last = key.rsplit("/", 1)[1]
        if last == "kernel":
            value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
        elif last == "gamma":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif last in ("beta", "moving_mean", "bias"):
            value = 0.1 * rng.standard_normal(shape)
        elif last == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            raise AssertionError(key)
        weights[key] = value.astype(np.float32)
    return weights


def write_tf1_checkpoint(prefix, weights):
    names = sorted(weights) + ["global_step"]
    tensors = [tf.constant(weights[n]) for n in names[:-1]] + [tf.constant(1, tf.int64)]
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )


@pytest.fixture(scope="module")
def converted_r50_sk(tmp_path_factory):
    root = tmp_path_factory.mktemp("r50sk")
    weights = synthetic_weights()
    ref = np.load(REFERENCE / "synthetic_r50_1x_sk1" / "reference_outputs.npz")
    digest = hashlib.sha256()
    for key in ref["weight_names"]:
        digest.update(np.ascontiguousarray(weights[str(key)]).tobytes())
    assert digest.hexdigest() == str(ref["weights_sha256"]), "numpy drew other weights"
    write_tf1_checkpoint(root / "model.ckpt-1", weights)
    del weights
    report = convert.convert(str(root / "model.ckpt-1"), str(root / "run"), image_size=64)
    return root / "run", report, ref


def test_r50_sk_conversion_is_complete(converted_r50_sk):
    _, report, _ = converted_r50_sk
    arch = report["architecture"]
    assert (arch["depth"], arch["width_multiplier"], arch["sk_ratio"], arch["cifar_stem"]) == (
        50,
        1.0,
        0.0625,
        False,
    )
    assert report["mapped_tensors"] == 387 and report["mapped_values"] == 45_993_928
    assert report["skipped"] == ["global_step"]


def test_r50_sk_every_stage_equals_the_reference(converted_r50_sk):
    run, _, ref = converted_r50_sk
    from simclr_tf import config as config_lib

    config = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    model = convert.builders.pretrain_model(config, 1000)
    checkpoints.restore_model(model, str(run))
    got = model(tf.constant(ref["inputs"]), training=False)
    stages = keras.Model(model.encoder.inputs, model.encoder.get_layer("initial_max_pool").output)
    _close(stages([ref["inputs"]]), ref["initial_max_pool"], "initial_max_pool")
    for key in R50_STAGES:
        _close(got[key], ref[key], key)
    _close(got["probe_logits"], ref["logits_sup"], "logits")


@pytest.mark.slow  # an SK ResNet-50 SavedModel, about 25 s
def test_r50_sk_export_serves_the_reference_outputs(converted_r50_sk, tmp_path):
    run, _, ref = converted_r50_sk
    from simclr_tf import export

    config = _export_config(run, tmp_path / "export")
    assert export.export_from_config(config)["image_size"] == 64
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    got = serve(images=tf.constant(ref["inputs"]))
    for key in R50_STAGES:
        _close(got[key], ref[key], f"served {key}")
    _close(got["logits"], ref["logits_sup"], "served logits")


# --- Manifests of released-size architectures (no weights) ---------------------------


@pytest.mark.parametrize("name", ["tf1_r50_1x_sk1.txt", "tf2_r50_1x_sk1.txt"])
def test_manifest_maps_completely_onto_the_matching_model(name):
    shapes = manifest(name)
    layout = reference_layout.read_layout(shapes)
    optimizer_or_step = {
        k
        for k in shapes
        if "Momentum" in k
        or "OPTIMIZER" in k
        or k
        in (
            "global_step",
            "global_step/.ATTRIBUTES/VARIABLE_VALUE",
            "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
            "_CHECKPOINTABLE_OBJECT_GRAPH",
        )
    }
    assert set(layout.skipped) == optimizer_or_step
    assert set(layout.mapped) | set(layout.skipped) == set(shapes)
    config, classes = convert.run_config(layout, "/tmp/unused")
    model, pairs = convert.build_model(layout, config, classes)
    assert len(pairs) == len(layout.mapped) == len(model.weights)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "tf1_r50_1x_sk1_pretrain.txt",
        "tf1_r50_4x_sk0.txt",
        "tf1_r50_4x_sk0_pretrain.txt",
        "tf1_r152_3x_sk1.txt",
        "tf1_r152_3x_sk1_pretrain.txt",
    ],
)
def test_large_manifest_maps_completely_onto_the_matching_model(name):
    test_manifest_maps_completely_onto_the_matching_model(name)


def test_manifest_architectures_are_the_ones_their_headers_state():
    for name, expected in (
        ("tf1_r50_1x_sk1.txt", (50, 1.0, 0.0625, False)),
        ("tf1_r50_4x_sk0.txt", (50, 4.0, 0.0, False)),
        ("tf1_r152_3x_sk1.txt", (152, 3.0, 0.0625, False)),
        ("tf2_r50_1x_sk1.txt", (50, 1.0, 0.0625, False)),
    ):
        layout = reference_layout.read_layout(manifest(name))
        assert reference_layout.infer_architecture(layout) == expected, name


def test_simclr_tf_resnets_have_the_reference_conv_shapes_in_creation_order():
    """The reference's layout (from its code's README) and simclr_tf's ResNet agree
    layer by layer, so conversion by creation order is exact."""
    from simclr_tf import keras_compat

    for depth, width, sk, cifar in (
        (18, 1, 0.0, True),
        (34, 0.5, 0.0, False),
        (50, 1, 0.0625, False),
        (50, 2, 0.0, False),
    ):
        encoder = resnet.resnet(depth, width, sk, cifar, input_shape=(32, 32, 3))
        convs = {
            l.name: l
            for l in keras_compat.all_sublayers(encoder)
            if isinstance(l, keras.layers.Conv2D)
        }
        ordered = [
            convs["conv2d" if i == 0 else f"conv2d_{i}"].kernel.shape for i in range(len(convs))
        ]
        expected = reference_layout.conv_shapes(depth, max(width, 1), sk, cifar)
        if width < 1:
            continue
        assert [list(s) for s in ordered] == expected, (depth, width, sk, cifar)


def test_bad_checkpoints_fail_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        convert.convert(str(tmp_path), str(tmp_path / "out"))
    shapes = manifest("tf1_r50_1x_sk1.txt")
    shapes["base_model/conv2d_5/kernel"] = [3, 3, 64, 64]
    layout = reference_layout.read_layout(shapes)
    with pytest.raises(reference_layout.LayoutError, match="no reference ResNet"):
        reference_layout.infer_architecture(layout)
    shapes = manifest("tf1_r50_1x_sk1.txt")
    shapes["head_supervised/linear_layer/dense/kernel"] = [1024, 1000]
    layout = reference_layout.read_layout(shapes)
    config, classes = convert.run_config(layout, "/tmp/unused")
    with pytest.raises(
        convert.ConversionError,
        match=r"head_supervised/linear_layer/dense/kernel: shape \[1024, 1000\]",
    ):
        convert.build_model(layout, config, classes)
    shapes = manifest("tf1_r50_1x_sk1.txt")
    shapes["base_model/unexpected/kernel"] = [1]
    with pytest.raises(reference_layout.LayoutError, match="base_model/unexpected/kernel"):
        reference_layout.read_layout(shapes)


def _convert_tool(*args):
    import subprocess
    import sys

    tool = str(REPO / "tools" / "convert_checkpoint.py")
    return subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)


def test_the_converter_tool_reports_and_exits_cleanly(tmp_path):
    ok = _convert_tool(f"--input={REFERENCE / 'tf1_r18_cifar'}", f"--output_dir={tmp_path / 'run'}")
    assert ok.returncode == 0, ok.stderr
    assert "ResNet-18 1x" in ok.stdout and "121 tensors" in ok.stdout
    bad = _convert_tool(f"--input={tmp_path / 'nothing'}", f"--output_dir={tmp_path / 'x'}")
    assert bad.returncode == 2 and "convert_checkpoint: error: no checkpoint" in bad.stderr
