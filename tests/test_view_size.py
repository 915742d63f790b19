"""`--view_size`: pretraining on views smaller than the images the encoder is evaluated
and served at."""

import numpy as np
import pytest
import tensorflow as tf
from test_train import _replace, tiny_config

from simclr_tf import main, train
from simclr_tf.config import AugmentConfig, Config, ConfigError, DataConfig, ModelConfig
from simclr_tf.data import open_source, pipeline
from simclr_tf.models import builders


@pytest.mark.parametrize("batched", [True, False])
def test_pretraining_views_have_the_view_size(cifar_data_dir, batched):
    source = open_source("cifar10", cifar_data_dir)
    data = DataConfig(image_size=32, shuffle_buffer=8, train_split="train[:64]")
    aug = AugmentConfig(view_size=16, batched_augment=batched, blur_prob=0.0)
    batch = next(iter(pipeline.pretrain_dataset(source, "train[:64]", data, aug, 8)))
    assert batch["view1"].shape == (8, 16, 16, 3) and batch["view2"].shape == (8, 16, 16, 3)
    # Evaluation keeps --image_size.
    eval_batch = next(iter(pipeline.eval_dataset(source, "test[:8]", data, 8)))
    assert eval_batch["image"].shape == (8, 32, 32, 3)


def test_the_encoder_for_small_views_is_the_same_network_at_any_side():
    """Its weights loaded into the fixed-size encoder give the same h at 32 px (one
    network, only the input's declared shape differs), and it also takes 24 px."""
    model = ModelConfig(depth=18, width_multiplier=0.125)
    fixed = builders.build_encoder(Config(model=model, data=DataConfig(image_size=32)))
    free = builders.build_encoder(
        Config(model=model, data=DataConfig(image_size=32), augment=AugmentConfig(view_size=24))
    )
    assert len(fixed.weights) == len(free.weights)
    free.set_weights(fixed.get_weights())
    images = tf.random.stateless_uniform([4, 32, 32, 3], seed=[1, 2])
    a = fixed(images, training=False)["final_avg_pool"].numpy()
    b = free(images, training=False)["final_avg_pool"].numpy()
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    small = free(images[:, :24, :24], training=False)["final_avg_pool"]
    assert small.shape == a.shape


def test_a_run_trains_on_small_views_and_evaluates_at_the_image_size(tmp_path, cifar_data_dir):
    config = _replace(
        tiny_config(tmp_path, cifar_data_dir, mode="pretrain", train_steps=2),
        "augment",
        view_size=16,
    )
    model, results = train.run(config)
    assert results["global_step"] == 2 and 0 <= results["knn_acc"] <= 1
    # A linear evaluation of this run (its own flags, no --view_size) reads 32 px images
    # into the same weights.
    lin = _replace(
        tiny_config(tmp_path / "lin", cifar_data_dir, mode="linear_eval", train_steps=2),
        "run",
        init_checkpoint=str(tmp_path),
    )
    _, lin_results = train.run(lin)
    assert lin_results["global_step"] == 2 and 0 <= lin_results["eval_accuracy"] <= 1


@pytest.mark.parametrize("size", [-1, 4])
def test_a_bad_view_size_is_refused(size):
    config = Config(augment=AugmentConfig(view_size=size))
    with pytest.raises(ConfigError, match="--view_size"):
        main.validate(config)
