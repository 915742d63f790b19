"""`execution`: the real training path (pipeline, fit, callbacks) at one step per
compiled call against `--steps_per_execution` steps per call, interleaved rounds."""

import statistics
import time

from tools.benchmark.common import augment_config, project_model
from tools.benchmark.machine import precisions
from tools.benchmark.options import FLAGS


def _fit_seconds(model, dataset, steps):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def bench_execution():
    from simclr_tf import data as sources
    from simclr_tf.config import DataConfig
    from simclr_tf.data import pipeline

    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=FLAGS.batch, shuffle_buffer=10000, cache=True)
    counts = [1, FLAGS.steps_per_execution]
    # Whole calls in every round, so both counts time the same number of steps.
    steps = max(FLAGS.repeats // FLAGS.steps_per_execution, 1) * FLAGS.steps_per_execution
    rows = []
    for label, precision in precisions()[:1]:
        model, _ = project_model(precision, FLAGS.width, FLAGS.matmul_kernel_grad)
        dataset = pipeline.pretrain_dataset(source, "train", data, augment_config(), FLAGS.batch)
        times = {n: [] for n in counts}
        for n in counts:  # compile each count's function before anything is timed
            model.steps_per_execution, model.train_function = n, None
            _fit_seconds(model, dataset, max(FLAGS.warmup, 1) * n)
        functions = {}
        for n in counts:
            model.steps_per_execution, model.train_function = n, None
            model.make_train_function()
            functions[n] = model.train_function
        for _ in range(FLAGS.rounds):
            for n in counts:
                model.steps_per_execution, model.train_function = n, functions[n]
                times[n].append(_fit_seconds(model, dataset, steps))
        one, many = statistics.median(times[1]), statistics.median(times[counts[1]])
        rows.append(
            {
                "impl": f"simclr_tf fit, {counts[1]} steps per call vs 1",
                "precision": label,
                "step_s_one_per_call": one,
                "step_s_many_per_call": many,
                "speedup": one / many,
                "rounds": FLAGS.rounds,
                "steps_per_round": steps,
            }
        )
    return rows
