"""ResNet encoders: published parameter counts, endpoint shapes, zero-initialised BN."""

import numpy as np
import pytest

from simclr_tf.models import resnet


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_resnet50_matches_the_published_torchvision_count():
    # torchvision resnet50: 25,557,032 parameters, of which the 1000-way fc is 2048*1000+1000.
    assert _trainable(resnet.resnet(50)) == 25_557_032 - (2048 * 1000 + 1000)


def test_resnet18_matches_the_published_torchvision_count():
    # torchvision resnet18: 11,689,512 parameters, fc 512*1000+1000.
    assert _trainable(resnet.resnet(18)) == 11_689_512 - (512 * 1000 + 1000)


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


def test_zero_gamma_makes_blocks_start_as_identity_paths():
    # With gamma=0 on the residual branch, group 1 of a CIFAR ResNet-18 (no projection)
    # computes relu(relu(x)) = relu(x): its output equals its input at initialisation.
    model = resnet.resnet(18, 0.25, cifar_stem=True, input_shape=(8, 8, 3))
    out = model(np.random.default_rng(0).random([2, 8, 8, 3]).astype(np.float32))
    np.testing.assert_allclose(out["block_group1"], out["initial_conv"], atol=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        resnet.resnet(42)
    with pytest.raises(ValueError, match="width_multiplier"):
        resnet.resnet(18, 0)
