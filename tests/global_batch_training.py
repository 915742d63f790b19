"""A few pretraining steps on one fixed global batch under any strategy, for comparing
topologies (1 x 1, 1 worker x 2 devices, 2 workers x 1 device).

Each input pipeline takes its worker's share of the global batch and cuts it into
per-replica batches, so whatever the topology the replicas together hold exactly the
global batch at every step. As a script it is one worker of a multi-worker run
(TF_CONFIG set by the caller): `python tests/global_batch_training.py BATCH.npz OUT.npz`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STEPS = 3


def config():
    from simclr_tf.config import Config, DataConfig, ModelConfig, OptimConfig, RunConfig

    return Config(
        run=RunConfig(precision="float32"),
        data=DataConfig(batch_size=16, seed=5, deterministic=True, shuffle_buffer=64),
        # Global BN: the statistics, like the negatives, span the global batch.
        model=ModelConfig(depth=18, width_multiplier=0.125, num_proj_layers=2, sync_bn=True),
        optim=OptimConfig(learning_rate=1.0, warmup_epochs=0.0, weight_decay=1e-4),
    )


def global_batch(data_dir):
    """One deterministic batch of CIFAR-10 view pairs, as numpy."""
    from simclr_tf.data import open_source, pipeline

    c = config()
    source = open_source("cifar10", data_dir)
    batch = next(iter(pipeline.pretrain_dataset(source, "train[:256]", c.data, c.augment, 16)))
    return {k: v.numpy() for k, v in batch.items()}


def train(strategy, batch):
    """Loss after each step, and the initial and final weights (numpy, in order)."""
    import keras
    import tensorflow as tf

    from simclr_tf import training_loop
    from simclr_tf.models import builders

    c = config()
    size = len(batch["label"])

    def dataset_fn(ctx):
        share = size // ctx.num_input_pipelines
        start = ctx.input_pipeline_id * share
        part = {k: v[start : start + share] for k, v in batch.items()}
        per_replica = ctx.get_per_replica_batch_size(size)
        return tf.data.Dataset.from_tensor_slices(part).batch(per_replica).repeat()

    keras.utils.set_random_seed(c.data.seed)
    with strategy.scope():
        model = builders.pretrain_model(c, num_classes=10)
        model = training_loop.compile_for_run(model, c, total_steps=10, steps_per_epoch=10)
    initial = [v.numpy() for v in model.trainable_variables]
    history = model.fit(
        strategy.distribute_datasets_from_function(dataset_fn),
        epochs=STEPS,
        steps_per_epoch=1,
        verbose=0,
        shuffle=False,
    )
    return history.history["loss"], initial, [v.numpy() for v in model.trainable_variables]


def main(batch_path, out_path):
    import numpy as np
    import tensorflow as tf

    from simclr_tf import distributed

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with np.load(batch_path) as f:
        batch = dict(f)
    losses, _, weights = train(strategy, batch)
    if distributed.is_chief(strategy):
        np.savez(out_path, *weights, losses=np.array(losses))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
