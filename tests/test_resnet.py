"""ResNet encoders: published parameter counts, endpoint shapes, zero-initialised BN."""

import numpy as np
import pytest

from simclr_tf.models import resnet


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_resnet50_matches_the_published_torchvision_count():
    # torchvision resnet50: 25,557,032 parameters, of which the 1000-way fc is 2048*1000+1000.
    assert _trainable(resnet.resnet(50)) == 25_557_032 - (2048 * 1000 + 1000)


def test_resnet18_is_torchvision_s_plus_the_reference_block_group1_projection():
    # torchvision resnet18: 11,689,512 parameters, fc 512*1000+1000. The reference
    # SimCLR ResNet also projects the shortcut of block_group1's first block:
    # a 1x1 64->64 conv and its BN (gamma, beta).
    assert _trainable(resnet.resnet(18)) == 11_689_512 - (512 * 1000 + 1000) + 64 * 64 + 2 * 64


def test_cifar_resnet18_has_the_reference_checkpoint_s_parameter_count():
    """Against the reference code's own ResNet-18 CIFAR checkpoint: the same number of
    trainable values (kernels, gammas, betas) in its base network."""
    import tensorflow as tf

    from conftest import SHARED_TFDS

    path = SHARED_TFDS.parent / "reference_checkpoints" / "tf1_r18_cifar" / "model.ckpt-1"
    stored = sum(
        int(np.prod(shape))
        for name, shape in tf.train.list_variables(str(path))
        if name.startswith("base_model/") and "moving_" not in name
    )
    model = resnet.resnet(18, cifar_stem=True, input_shape=(32, 32, 3))
    assert _trainable(model) == stored


@pytest.mark.parametrize(
    "width, sk_ratio, paper_millions",
    [(1, 0.0, 24), (2, 0.0, 94), (1, 0.0625, 35), (2, 0.0625, 140)],
)
def test_paper_parameter_counts(width, sk_ratio, paper_millions):
    count = _trainable(resnet.resnet(50, width, sk_ratio)) / 1e6
    # The paper rounds to whole millions; within that rounding and within 2.1%.
    assert round(count) == paper_millions
    assert abs(count - paper_millions) / paper_millions < 0.021


def test_resnet50_4x_paper_count():
    count = _trainable(resnet.resnet(50, 4)) / 1e6
    assert round(count) == 375


def test_cifar_stem_endpoints_and_fractional_width():
    model = resnet.resnet(18, 0.25, cifar_stem=True, input_shape=(32, 32, 3))
    out = model(np.zeros([2, 32, 32, 3], np.float32))
    assert out["initial_conv"].shape == (2, 32, 32, 16)  # 3x3 stride 1, no max-pool
    assert out["initial_max_pool"].shape == (2, 32, 32, 16)
    assert out["block_group1"].shape == (2, 32, 32, 16)
    assert out["block_group4"].shape == (2, 4, 4, 128)
    assert out["final_avg_pool"].shape == (2, 128) == (2, resnet.representation_dim(18, 0.25))


def test_imagenet_stem_downsamples_by_32():
    model = resnet.resnet(50, 0.25, sk_ratio=0.0625, input_shape=(64, 64, 3))
    out = model(np.zeros([1, 64, 64, 3], np.float32))
    assert out["block_group1"].shape == (1, 16, 16, 64)
    assert out["block_group4"].shape == (1, 2, 2, 512)


def test_last_bn_of_every_block_starts_with_zero_gamma():
    model = resnet.resnet(34, 0.25)
    zero = [v for v in model.trainable_variables if "gamma" in v.path and not np.any(v.numpy())]
    assert len(zero) == 3 + 4 + 6 + 3  # one per residual block


def test_zero_gamma_makes_blocks_start_as_their_shortcut():
    """With gamma = 0 on every residual branch, block_group1 of a CIFAR ResNet-18 is
    relu(its projection shortcut) at initialisation: the first block gives
    relu(BN(conv1x1(x))) and the second, an identity block, passes it on. Checked
    against numpy with BN's initial statistics (mean 0, variance 1, eps 1e-5)."""
    model = resnet.resnet(18, 0.25, cifar_stem=True, input_shape=(8, 8, 3))
    out = model(np.random.default_rng(0).random([2, 8, 8, 3]).astype(np.float32))
    kernel = model.get_layer("conv2d_1").kernel.numpy()[0, 0]  # the projection, [16, 16]
    expected = np.maximum(np.asarray(out["initial_conv"]) @ kernel / np.sqrt(1 + 1e-5), 0)
    np.testing.assert_allclose(out["block_group1"], expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        resnet.resnet(42)
    with pytest.raises(ValueError, match="width_multiplier"):
        resnet.resnet(18, 0)
