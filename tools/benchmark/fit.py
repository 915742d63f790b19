"""`fit`: the real training path against the same model's step alone, interleaved."""

import math
import os
import random
import statistics
import time

from tools.benchmark.common import cifar_config, first_epoch_steps, real_batch, time_steps
from tools.benchmark.machine import precisions
from tools.benchmark.options import FLAGS


def _bootstrap_interval(values, statistic=statistics.median, level=0.9, draws=2000):
    """A percentile bootstrap interval of `statistic` over `values` (seeded, so a
    report is reproducible from its JSON)."""
    rng = random.Random(0)
    stats = sorted(statistic(rng.choices(values, k=len(values))) for _ in range(draws))
    tail = (1 - level) / 2
    return stats[int(tail * draws)], stats[min(draws - 1, int((1 - tail) * draws))]


class _CpuShare:
    """This process's CPU time over the wall time of the timed phases, per core: how
    busy a phase keeps the machine (1.0: every core all the time)."""

    def __init__(self):
        self.cpu_s = self.wall_s = 0.0
        self.mark()

    def mark(self):
        """A timed phase may start here."""
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def add(self):
        """Counts the time since the last mark."""
        self.cpu_s += time.process_time() - self._cpu
        self.wall_s += time.perf_counter() - self._wall

    @property
    def share(self):
        return self.cpu_s / self.wall_s / (os.cpu_count() or 1) if self.wall_s else 0.0


def _interleaved_times(batch, skip, steps_per_loop):
    import keras

    class InterleavedTimes(keras.callbacks.Callback):
        """Times the training path's steps and, after every --repeats timed ones, the
        same model's step alone on one batch in memory, all inside one `fit`. Switching
        every few seconds, both meet the same machine state (a VM's speed can drift by
        +-10% over minutes), and the first pass over the data is paid once."""

        def __init__(self):
            super().__init__()
            self.seen, self.in_round, self.last_end = 0, 0, None
            self.fit_s, self.step_s, self.boundary_s = [[]], [], []
            self.inside_s, self.call_s = [], 0.0
            self.fit_cpu, self.step_cpu = _CpuShare(), _CpuShare()

        def on_train_begin(self, logs=None):
            self.last_end = time.perf_counter()
            if not getattr(self.model.train_function, "timed", False):  # fit may rerun
                self._time_train_function()

        def _time_train_function(self):
            # Time inside the compiled function (step, and the wait for its batch)
            # apart from the Keras loop and callbacks around it.
            function = self.model.train_function

            def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.call_s = time.perf_counter() - start

            timed.timed = True
            self.model.train_function = timed

        def on_train_batch_end(self, step, logs=None):
            now = time.perf_counter()
            interval, self.last_end = now - self.last_end, now
            self.seen += 1
            if self.seen <= skip or self.done:
                return
            self.in_round += 1
            if step == 0:  # also holds the previous loop's end: its summaries and save
                self.boundary_s.append(interval)
            elif self.in_round > FLAGS.warmup:  # the prefetch buffer settles first
                self.fit_s[-1].append(interval)
                self.inside_s.append(self.call_s)
                self.fit_cpu.add()
            self.fit_cpu.mark()
            # Never between a loop's last step and its save: that interval is timed.
            if len(self.fit_s[-1]) >= FLAGS.repeats and step != steps_per_loop - 1:
                self.step_cpu.mark()
                self.step_s.append(self._step_alone())
                self.step_cpu.add()
                self.in_round = 0
                if not self.done:
                    self.fit_s.append([])
                self.last_end = time.perf_counter()
                self.fit_cpu.mark()

        @property
        def done(self):
            return len(self.step_s) == FLAGS.rounds

        def _step_alone(self):
            # The optimizer's step count drives the schedule, summaries, checkpoints
            # and the stop; the in-memory steps must not advance it.
            iterations = self.model.optimizer.iterations
            before = iterations.numpy()
            seconds = time_steps(lambda: self.model.train_on_batch(batch), statistics.mean)
            iterations.assign(before)
            return seconds

    return InterleavedTimes()


def bench_fit():
    """The real training path (`train.run`: input pipeline, step, TensorBoard
    summaries, checkpoints every --checkpoint_steps) against the same compiled model's
    step on one batch in memory, alternating --rounds times within one run. The steps
    that end a checkpoint loop (summaries, save) are timed apart and their extra time
    is spread over the loop's steps. With --after_first_epoch the first pass over the
    data is untimed warm-up."""
    import tempfile

    import keras

    from simclr_tf import data as sources
    from simclr_tf import train

    rows = []
    batch = real_batch(FLAGS.batch)
    loop = FLAGS.checkpoint_steps
    skip = FLAGS.warmup + first_epoch_steps(
        sources.open_source("cifar10", FLAGS.data_dir, download=False)
    )
    # Timed and settling steps, one deferral per round, one loop boundary per loop.
    needed = skip + FLAGS.rounds * (FLAGS.warmup + FLAGS.repeats + 1)
    total = needed + math.ceil(needed / loop) + 1
    for label, precision in precisions():
        times = _interleaved_times(batch, skip, loop)
        with tempfile.TemporaryDirectory() as model_dir:
            config = cifar_config(
                "pretrain",
                model_dir,
                precision,
                train_steps=total,
                checkpoint_steps=loop,
                jit_compile=FLAGS.xla,
                eval_steps=1,
                knn_bank_size=256,
                strategy="default",
            )
            train.run(config, extra_callbacks=[times])
        keras.mixed_precision.set_global_policy("float32")
        if not times.done:
            raise RuntimeError(f"fit ended after {len(times.step_s)} of {FLAGS.rounds} rounds")
        fit_mean = statistics.mean(x for r in times.fit_s for x in r)
        # A loop's end costs its boundary step's extra time once per `loop` steps.
        loop_end_s = statistics.mean(times.boundary_s) - fit_mean if times.boundary_s else 0.0
        fit_s = [statistics.mean(r) + loop_end_s / loop for r in times.fit_s]
        per_round = [s / f for f, s in zip(fit_s, times.step_s)]
        fit_step = statistics.mean(fit_s)
        rows.append(
            {
                "impl": "simclr_tf fit",
                "precision": label,
                "step_s": fit_step,
                "fit_step_s_per_round": fit_s,
                "loop_end_extra_s": loop_end_s,
                "loop_ends_timed": len(times.boundary_s),
                "step_alone_s_per_round": times.step_s,
                "fit_vs_step_per_round": per_round,
                "views_per_s": 2 * FLAGS.batch / fit_step,
                "images_per_s": FLAGS.batch / fit_step,
                "step_alone_s": statistics.mean(times.step_s),
                "fit_vs_step": statistics.median(per_round),
                "fit_vs_step_90pct": _bootstrap_interval(per_round),
                "outside_function_s": fit_mean - statistics.mean(times.inside_s),
                "cpu_share_fit": times.fit_cpu.share,
                "cpu_share_step_alone": times.step_cpu.share,
            }
        )
    return rows
