"""Both checkpoint formats of the reference code convert to the same network, for every
depth with and without selective kernels, and the TF2 basic-block layout converts to
the reference's own numbers.

The checkpoints are written here tensor by tensor (`SaveV2`): the same random values
once under the TF2 object paths that google-research/simclr's `tf2/resnet.py` gives its
layers (its layer lists, identity, pooling and dropblock entries included, as this
test enumerates them), and once under the TF1 names its `resnet.py` creates
(`base_model/conv2d_N`, counted in creation order). The converter reads the two
through different code (object-path sorting vs name counters), so equal converted
weights and outputs show that both land every tensor in the same layer. Absolute
correctness is anchored by real reference data: the TF1 ResNet-18 and ResNet-50 SK
outputs (test_convert.py) and the TF2 ResNet-18 training fixture (below).
"""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf import checkpoints, convert
from simclr_tf import config as config_lib

from conftest import SHARED_TFDS

BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}  # fmt: skip
FIXTURE = pathlib.Path(SHARED_TFDS).parent / "reference_training" / "tf2_r18_seed1"


class _Reference:
    """Enumerates the reference ResNet's tensors: (TF2 key, TF1 key, shape)."""

    def __init__(self):
        self.tensors = []
        self.convs = 0
        self.bns = 0

    def conv(self, tf2_path, shape):
        tf1 = "base_model/conv2d" + (f"_{self.convs}" if self.convs else "") + "/kernel"
        self.convs += 1
        self.tensors.append((tf2_path + "/kernel" + SUFFIX, tf1, list(shape)))

    def bn(self, tf2_path, channels):
        name = "base_model/batch_normalization" + (f"_{self.bns}" if self.bns else "")
        self.bns += 1
        for field in BN_FIELDS:
            self.tensors.append((f"{tf2_path}/{field}{SUFFIX}", f"{name}/{field}", [channels]))


def reference_tensors(depth, sk_ratio, cifar_stem, w=1):
    r = _Reference()
    stem = "model/resnet_model/initial_conv_relu_max_pool"
    if cifar_stem:  # [conv, identity, bn, identity]
        r.conv(f"{stem}/0/conv2d", [3, 3, 3, 64 * w])
        r.bn(f"{stem}/2/bn", 64 * w)
    elif sk_ratio > 0:  # [conv, bn, conv, bn, conv, identity, bn, max pool, identity]
        r.conv(f"{stem}/0/conv2d", [3, 3, 3, 32 * w])
        r.bn(f"{stem}/1/bn", 32 * w)
        r.conv(f"{stem}/2/conv2d", [3, 3, 32 * w, 32 * w])
        r.bn(f"{stem}/3/bn", 32 * w)
        r.conv(f"{stem}/4/conv2d", [3, 3, 32 * w, 64 * w])
        r.bn(f"{stem}/6/bn", 64 * w)
    else:  # [conv, identity, bn, max pool, identity]
        r.conv(f"{stem}/0/conv2d", [7, 7, 3, 64 * w])
        r.bn(f"{stem}/2/bn", 64 * w)
    bottleneck = depth >= 50
    channels = 64 * w
    for g, count in enumerate(BLOCKS[depth]):
        f = 64 * w * 2**g
        out = 4 * f if bottleneck else f
        for b in range(count):
            block = f"model/resnet_model/block_groups/{g}/layers/{b}"
            if b == 0:  # the shortcut's layers are created first
                section = "projection_layers" if bottleneck else "shortcut_layers"
                # ResNet-D: [fixed padding (stride 2 only), avg pool, conv, bn]
                first = (2 if g > 0 else 1) if sk_ratio > 0 else 0
                r.conv(f"{block}/{section}/{first}/conv2d", [1, 1, channels, out])
                r.bn(f"{block}/{section}/{first + 1}/bn", out)
            if not bottleneck:  # [conv, bn, conv, bn], plain 3x3 even with sk_ratio
                r.conv(f"{block}/conv2d_bn_layers/0/conv2d", [3, 3, channels, f])
                r.bn(f"{block}/conv2d_bn_layers/1/bn", f)
                r.conv(f"{block}/conv2d_bn_layers/2/conv2d", [3, 3, f, f])
                r.bn(f"{block}/conv2d_bn_layers/3/bn", f)
            else:
                layers = f"{block}/conv_relu_dropblock_layers"
                r.conv(f"{layers}/0/conv2d", [1, 1, channels, f])
                r.bn(f"{layers}/1/bn", f)  # 2: dropblock
                if sk_ratio > 0:  # 3: SK_Conv2D; 4: dropblock
                    mid = max(int(f * sk_ratio), 32)
                    r.conv(f"{layers}/3/conv2d_fixed_padding/conv2d", [3, 3, f, 2 * f])
                    r.bn(f"{layers}/3/batch_norm_relu/bn", 2 * f)
                    r.conv(f"{layers}/3/conv2d_0", [1, 1, f, mid])
                    r.bn(f"{layers}/3/batch_norm_relu_1/bn", mid)
                    r.conv(f"{layers}/3/conv2d_1", [1, 1, mid, 2 * f])
                    last = 5
                else:  # 3: conv, 4: bn, 5: dropblock
                    r.conv(f"{layers}/3/conv2d", [3, 3, f, f])
                    r.bn(f"{layers}/4/bn", f)
                    last = 6
                r.conv(f"{layers}/{last}/conv2d", [1, 1, f, out])
                r.bn(f"{layers}/{last + 1}/bn", out)  # then a dropblock
            channels = out
    return r.tensors


def _values(tensors, seed):
    rng = np.random.default_rng(seed)
    values = []
    for _, tf1, shape in tensors:
        field = tf1.rsplit("/", 1)[1]
        if field == "kernel":
            v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif field in ("gamma", "moving_variance"):
            v = rng.uniform(0.5, 1.5, size=shape)
        else:
            v = rng.normal(scale=0.1, size=shape)
        values.append(v.astype(np.float32))
    return values


def _write(prefix, keys, values):
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=list(keys),
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(v) for v in values],
    )
    return str(prefix)


def _converted(run_dir, sk_ratio):
    config = config_lib.from_dict(json.loads((run_dir / "config.json").read_text()))
    model = convert.builders.pretrain_model(config, 0)
    checkpoints.restore_model(model, str(run_dir))
    return config, model


CASES = [(18, 0.0, True), (18, 0.0625, False)]  # basic blocks; bottlenecks behind slow
SLOW_CASES = [
    (depth, sk, cifar)
    for depth in BLOCKS
    for sk, cifar in ((0.0, False), (0.0625, False), (0.0625, True))
    if (depth, sk, cifar) not in CASES
]


def _check_formats_agree(tmp_path, depth, sk_ratio, cifar_stem):
    tensors = reference_tensors(depth, sk_ratio, cifar_stem)
    values = _values(tensors, seed=depth)
    tf1 = _write(tmp_path / "tf1" / "model.ckpt-1", [t[1] for t in tensors], values)
    tf2 = _write(tmp_path / "tf2" / "ckpt-1", [t[0] for t in tensors], values)
    # A CIFAR-stem ResNet-18/34 with SK settings has the shapes of one without: say it.
    sk = sk_ratio if (sk_ratio and cifar_stem) else None
    reports = [
        convert.convert(path, str(tmp_path / f"out_{name}"), image_size=32, sk_ratio=sk)
        for name, path in (("tf1", tf1), ("tf2", tf2))
    ]
    for report, fmt in zip(reports, ("tf1", "tf2")):
        arch = report["architecture"]
        assert report["format"] == fmt
        assert (arch["depth"], arch["sk_ratio"], arch["cifar_stem"]) == (
            depth,
            sk_ratio,
            cifar_stem,
        ), (fmt, arch)
        assert report["mapped_tensors"] == len(tensors) and report["skipped_tensors"] == 0
    (_, model1), (_, model2) = (_converted(tmp_path / f"out_{n}", sk_ratio) for n in ("tf1", "tf2"))
    by_value = {v.tobytes(): i for i, v in enumerate(values)}
    assert len(model1.weights) == len(model2.weights)
    for a, b in zip(model1.weights, model2.weights):  # built alike: the same order
        assert a.shape == b.shape, a.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        # Every model weight holds exactly one of the written tensors.
        assert a.numpy().astype(np.float32).tobytes() in by_value, a.path
    images = tf.constant(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), tf.float32)
    out1, out2 = model1(images, training=False), model2(images, training=False)
    np.testing.assert_array_equal(out1["final_avg_pool"], out2["final_avg_pool"])


@pytest.mark.parametrize("depth, sk_ratio, cifar_stem", CASES)
def test_tf1_and_tf2_checkpoints_convert_to_the_same_network(tmp_path, depth, sk_ratio, cifar_stem):
    _check_formats_agree(tmp_path, depth, sk_ratio, cifar_stem)


@pytest.mark.slow
@pytest.mark.parametrize("depth, sk_ratio, cifar_stem", SLOW_CASES)
def test_every_depth_converts_alike_from_both_formats(tmp_path, depth, sk_ratio, cifar_stem):
    _check_formats_agree(tmp_path, depth, sk_ratio, cifar_stem)


def test_the_tf2_basic_block_fixture_converts_to_the_reference_s_forward_pass(tmp_path):
    """The reference's own TF2 ResNet-18 checkpoint (ckpt_init of the training fixture):
    converted, the training-mode forward pass of step 1 equals the reference's."""
    report = convert.convert(str(FIXTURE / "ckpt_init"), str(tmp_path / "run"))
    assert report["format"] == "tf2" and report["architecture"]["depth"] == 18
    config = config_lib.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    model = convert.builders.pretrain_model(config, report["supervised_classes"])
    checkpoints.restore_model(model, str(tmp_path / "run"))
    inputs, outputs = np.load(FIXTURE / "inputs.npz"), np.load(FIXTURE / "outputs.npz")
    images = tf.concat([inputs["views1"], inputs["views2"]], axis=0)
    got = model(images, training=True)
    for ours, ref in (
        ("final_avg_pool", "hiddens"),
        ("proj_head_output", "proj_head_output"),
        ("probe_logits", "logits_sup"),
    ):
        expected = outputs[f"fwd1/{ref}"]
        error = np.abs(got[ours].numpy() - expected).max() / np.abs(expected).max()
        assert error <= 1e-4, (ours, error)


def _r18_tf1(tmp_path, extra=()):
    tensors = reference_tensors(18, 0.0, True)
    keys = [t[1] for t in tensors] + [k for k, _ in extra]
    values = _values(tensors, seed=1) + [v for _, v in extra]
    return _write(tmp_path / "tf1" / "model.ckpt-1", keys, values)


def test_every_stored_tensor_is_converted_or_skipped_by_name(tmp_path):
    """An unknown batch-norm field stops the conversion naming it; the EMA copy is
    skipped and reported as such, not as optimizer state."""
    bn_extra = ("base_model/batch_normalization_3/renorm_mean", np.zeros([64], np.float32))
    with pytest.raises(convert.ConversionError, match="renorm_mean"):
        convert.convert(_r18_tf1(tmp_path / "a", [bn_extra]), str(tmp_path / "out_a"))
    ema = ("ema_model/base_model/conv2d/kernel", np.zeros([3, 3, 3, 64], np.float32))
    report = convert.convert(_r18_tf1(tmp_path / "b", [ema]), str(tmp_path / "out_b"))
    assert report["skipped"] == [ema[0]]
    assert report["skipped_kinds"] == {"ema_model weights (moving averages, not converted)": 1}


def test_a_depth_override_that_does_not_fit_fails_in_one_line(tmp_path):
    with pytest.raises(convert.ConversionError, match="shape .* in the checkpoint"):
        convert.convert(_r18_tf1(tmp_path), str(tmp_path / "out"), depth=34)
    tensors = reference_tensors(34, 0.0, True)
    r34 = _write(tmp_path / "r34" / "model.ckpt-1", [t[1] for t in tensors], _values(tensors, 2))
    with pytest.raises(convert.ConversionError, match="do not fit a ResNet-18"):
        convert.convert(r34, str(tmp_path / "out34"), depth=18)
