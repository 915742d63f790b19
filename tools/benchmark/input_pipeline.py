"""`input`: the tf.data augmentation pipeline alone."""

import time

from tools.benchmark.common import augment_config, first_epoch_steps, time_steps
from tools.benchmark.options import FLAGS


def bench_input():
    import tensorflow as tf

    from simclr_tf import data as sources
    from simclr_tf.config import DataConfig
    from simclr_tf.data import pipeline

    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=FLAGS.batch, shuffle_buffer=10000, cache=True)
    aug = augment_config()
    iterator = iter(pipeline.pretrain_dataset(source, "train", data, aug, FLAGS.batch))
    for _ in range(first_epoch_steps(source) + 40):  # the cache, the shuffle buffer
        next(iterator)
    cpu_start = time.process_time()
    seconds = time_steps(lambda: tf.nest.map_structure(lambda t: t.numpy(), next(iterator)))
    # CPU time, not only wall time: in training the pipeline takes it from the step.
    cpu_ms = 1e3 * (time.process_time() - cpu_start) / (FLAGS.warmup + FLAGS.repeats)
    return [
        {
            "impl": "simclr_tf input",
            "views_per_s": 2 * FLAGS.batch / seconds,
            "images_per_s": FLAGS.batch / seconds,
            "cpu_ms_per_batch": cpu_ms,
        }
    ]
