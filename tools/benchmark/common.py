"""Pieces every benchmark mode shares: real CIFAR-10 batches, the project model, timing."""

import statistics
import time

from tools.benchmark.options import FLAGS
from tools.flop_count import forward_flops


def augment_config():
    """The CIFAR recipes' augmentation (colour strength 0.5, no blur)."""
    from simclr_tf.config import AugmentConfig

    return AugmentConfig(
        color_jitter_strength=0.5,
        blur_prob=0.0,
        batched_augment=FLAGS.batched_augment,
        augment_jit_compile=FLAGS.augment_jit_compile,
    )


def real_batch(batch):
    """One batch of two augmented views of real CIFAR-10 training images."""
    from simclr_tf import data as sources
    from simclr_tf.config import DataConfig
    from simclr_tf.data import pipeline

    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=batch, shuffle_buffer=1000)
    aug = augment_config()
    return next(iter(pipeline.pretrain_dataset(source, "train", data, aug, batch)))


def time_steps(run_step, statistic=statistics.median):
    for _ in range(FLAGS.warmup):
        run_step()
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - start)
    return statistic(times)


def project_model(precision, width, matmul_kernel_grad):
    import keras

    from simclr_tf.config import Config, DataConfig, LossConfig, ModelConfig, RunConfig
    from simclr_tf.models import builders
    from simclr_tf.optim import optimizers

    keras.mixed_precision.set_global_policy(precision)
    config = Config(
        run=RunConfig(precision=precision, jit_compile=FLAGS.xla),
        data=DataConfig(image_size=32),
        model=ModelConfig(
            depth=FLAGS.depth, width_multiplier=width, matmul_kernel_grad=matmul_kernel_grad
        ),
        loss=LossConfig(temperature=0.5),
    )
    with _strategy().scope():
        model = builders.pretrain_model(config, num_classes=10)
        optimizer = optimizers.build_optimizer("lars", 0.1, 0.9, 1e-4)
        model.compile(optimizer=optimizer, jit_compile=FLAGS.xla)
    return model, forward_flops(model.encoder)


def _strategy():
    from simclr_tf import distributed

    return distributed.make_strategy("default", num_devices=FLAGS.devices)


def first_epoch_steps(source):
    """Batches of one pass over the training split, if --after_first_epoch."""
    return source.num_examples("train") // FLAGS.batch if FLAGS.after_first_epoch else 0


def cifar_config(mode, model_dir, precision, warmup_epochs=1.0, **run):
    from simclr_tf.config import Config, DataConfig, LossConfig, ModelConfig, OptimConfig, RunConfig

    linear = mode == "linear_eval"
    return Config(
        run=RunConfig(
            **{
                "mode": mode,
                "model_dir": model_dir,
                "precision": precision,
                "strategy": "one_device",
                "checkpoint_steps": 200,
                "knn_bank_size": 50000,
                **run,
            }
        ),
        data=DataConfig(
            dataset="cifar10",
            data_dir=FLAGS.data_dir,
            batch_size=FLAGS.batch,
            cache=True,
            seed=FLAGS.seed,
        ),
        model=ModelConfig(
            depth=FLAGS.depth,
            width_multiplier=FLAGS.width,
            matmul_kernel_grad=FLAGS.matmul_kernel_grad,
        ),
        augment=augment_config(),
        loss=LossConfig(temperature=0.5),
        optim=(
            OptimConfig(optimizer="momentum", learning_rate=0.1, warmup_epochs=0, weight_decay=0.0)
            if linear
            else OptimConfig(learning_rate=1.0, warmup_epochs=warmup_epochs, weight_decay=1e-4)
        ),
    )
