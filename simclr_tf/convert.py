"""Reference SimCLR checkpoints (google-research/simclr, TF1 or TF2 format) converted
into a simclr_tf run directory: `config.json` plus a checkpoint that every mode reads
(`--init_checkpoint` for linear eval and fine-tuning, `--mode=export`).

The architecture is read from the checkpoint's own shapes (`reference_layout`); every
stored tensor is either copied into the model or reported as deliberately skipped
(optimizer slots, step counters), and a shape that does not fit stops the conversion
naming the tensor. The converted run is a pretraining run whose online probe holds the
reference's supervised head, when the checkpoint has one.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from simclr_tf import checkpoints, keras_compat, reference_layout, run_dirs
from simclr_tf.config import Config, DataConfig, ModelConfig, RunConfig
from simclr_tf.models import builders

REPORT_FILE = "conversion.json"


class ConversionError(ValueError):
    """The checkpoint cannot be converted, in one line naming the tensor."""


def latest_checkpoint(path):
    """A checkpoint prefix: `path` itself, or the latest one in directory `path`."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"no checkpoint {path} ({path}.index not found)")
    return path


def run_config(layout, output_dir, image_size=None, sk_ratio=None, **model_overrides):
    """The simclr_tf `Config` of the network a layout holds.

    Args:
      layout: a `reference_layout.Layout`.
      output_dir: the run directory to write.
      image_size: the input side (the checkpoint cannot say; default 32 for the CIFAR
        stem, 224 otherwise).
      sk_ratio: see `reference_layout.infer_architecture`.
      **model_overrides: `ModelConfig` fields to set instead of the inferred values.

    Returns:
      (config, num_classes of the supervised head or 0).
    """
    depth, width, ratio, cifar_stem = reference_layout.infer_architecture(layout, sk_ratio)
    head = layout.head
    out_dim = layout.shapes[head[-1]["kernel"]][1] if head else 128
    num_classes = layout.shapes[layout.supervised["bias"]][0] if layout.supervised else 0
    model = ModelConfig(
        depth=depth,
        width_multiplier=width,
        sk_ratio=ratio,
        cifar_stem=cifar_stem,
        proj_head_mode="nonlinear" if head else "none",
        num_proj_layers=max(len(head), 1),
        proj_out_dim=out_dim,
        linear_probe=num_classes > 0,
    )
    model = dataclasses.replace(model, **model_overrides)
    size = image_size or (32 if cifar_stem else 224)
    return Config(
        run=RunConfig(mode="pretrain", model_dir=output_dir),
        data=DataConfig(image_size=size),
        model=model,
    ), num_classes


def weight_pairs(model, layout):
    """(simclr_tf variable, checkpoint key) for every weight of `model`.

    The encoder's convs and BNs are matched by creation order, which the simclr_tf
    ResNet shares with the reference (its layers are named `conv2d_N` and
    `batch_normalization_N` as the reference names them).
    """
    layers = {layer.name: layer for layer in keras_compat.all_sublayers(model.encoder)}
    pairs = []
    for i, key in enumerate(layout.convs):
        pairs.append((layers[_indexed("conv2d", i)].kernel, key))
    for i, bn in enumerate(layout.bns):
        pairs += _bn_pairs(layers[_indexed("batch_normalization", i)], bn)
    for layer, ref in zip(model.projection_head.layers_, layout.head):
        pairs.append((layer.dense.kernel, ref["kernel"]))
        pairs += _bn_pairs(layer.bn, ref["bn"])
    if layout.supervised is not None:
        pairs += [
            (model.probe.kernel, layout.supervised["kernel"]),
            (model.probe.bias, layout.supervised["bias"]),
        ]
    return pairs


def _indexed(name, i):
    return name if i == 0 else f"{name}_{i}"


def _bn_pairs(layer, keys):
    pairs = []
    for field in reference_layout.BN_FIELDS:
        variable = getattr(layer, field, None)
        if (variable is None) != (field not in keys):
            raise ConversionError(
                f"{keys.get(field, layer.name + '/' + field)}: the batch "
                f"norm layers differ in whether they have a {field}"
            )
        if variable is not None:
            pairs.append((variable, keys[field]))
    return pairs


def build_model(layout, config, num_classes):
    """The simclr_tf model for a layout, in float32, with the layout's shapes checked."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = builders.pretrain_model(config, num_classes)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    expected = {id(v) for v in model.weights}
    try:
        pairs = weight_pairs(model, layout)
    except KeyError as error:
        arch = config.model
        raise ConversionError(
            f"the checkpoint's layers do not fit a ResNet-{arch.depth} "
            f"{arch.width_multiplier:g}x (sk_ratio {arch.sk_ratio:g}): no layer {error}"
        ) from None
    for variable, key in pairs:
        if list(variable.shape) != layout.shapes[key]:
            raise ConversionError(
                f"{key}: shape {layout.shapes[key]} in the checkpoint, "
                f"{list(variable.shape)} in the model ({variable.path})"
            )
    missing = expected - {id(v) for v, _ in pairs}
    if missing:
        name = next(v.path for v in model.weights if id(v) in missing)
        raise ConversionError(
            f"the checkpoint has no value for {len(missing)} model variables (first: {name})"
        )
    return model, pairs


def convert(input_path, output_dir, image_size=None, sk_ratio=None, **model_overrides):
    """Converts a reference checkpoint into a simclr_tf run directory.

    Args:
      input_path: a checkpoint prefix (`.../model.ckpt-250228`, `.../ckpt-1`) or a
        directory holding one.
      output_dir: the run directory to write (`config.json`, `ckpt-0`,
        `conversion.json`).
      image_size, sk_ratio, **model_overrides: as in `run_config`.

    Returns:
      The report also written to `output_dir/conversion.json`: source, format,
      architecture, counts of mapped and skipped tensors, and the skipped names.

    Raises:
      FileNotFoundError, reference_layout.LayoutError, ConversionError.
    """
    path = latest_checkpoint(input_path)
    reader = tf.train.load_checkpoint(path)
    layout = reference_layout.read_layout(reader.get_variable_to_shape_map())
    config, num_classes = run_config(layout, output_dir, image_size, sk_ratio, **model_overrides)
    model, pairs = build_model(layout, config, num_classes)
    unaccounted = sorted(set(layout.shapes) - {k for _, k in pairs} - set(layout.skipped))
    if unaccounted:
        raise ConversionError(
            f"{len(unaccounted)} tensors would be neither converted nor skipped "
            f"(first: {unaccounted[0]})"
        )
    for variable, key in pairs:
        variable.assign(reader.get_tensor(key).astype(np.float32))
    tf.io.gfile.makedirs(output_dir)
    manager = checkpoints.CheckpointManager(checkpoints.checkpoint_items(model), output_dir)
    saved = manager.save(0)
    report = {
        "source": path,
        "format": layout.format,
        "checkpoint": saved,
        "architecture": json.loads(config.to_json())["model"],
        "image_size": config.data.image_size,
        "supervised_classes": num_classes,
        "mapped_tensors": len(pairs),
        "mapped_values": int(sum(np.prod(layout.shapes[k]) for _, k in pairs)),
        "skipped_tensors": len(layout.skipped),
        "skipped_kinds": reference_layout.skipped_kinds(layout.skipped),
        "skipped": layout.skipped,
    }
    run_dirs.write_json_atomic(
        os.path.join(output_dir, run_dirs.CONFIG_FILE),
        {**json.loads(config.to_json()), "converted_from": path},
    )
    run_dirs.write_json_atomic(os.path.join(output_dir, REPORT_FILE), report)
    return report
