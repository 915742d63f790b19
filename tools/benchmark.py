"""Benchmarks on real CIFAR-10 data; JSON out, a row appended to BENCHMARKS.md.

  python tools/benchmark.py step   --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python tools/benchmark.py input  --data_dir=../shared/data/tfds --batch=256
  python tools/benchmark.py fit    --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python tools/benchmark.py budget --data_dir=../shared/data/tfds --width=0.25 --budget_minutes=30
  python tools/benchmark.py memory --data_dir=../shared/data/tfds --depth=50 --batch=256
  python tools/benchmark.py conv   --data_dir=../shared/data/tfds --width=1.0 --batch=256

step:   the compiled train step alone on one real batch held in memory, for the project's
        PretrainModel, the plain Keras 3 baseline (tools/plain_keras_simclr.py) in this
        process and the plain PyTorch baseline (tools/plain_torch_simclr.py, if torch is
        installed) in its own; each in float32 and bf16; views/s and GFLOP/s.
        --compare_kernel_grad also times the project's bf16 step with every conv's
        native kernel gradient (simclr_tf.conv's matmul path off).
input:  the tf.data augmentation pipeline alone; views/s and CPU ms per batch.
fit:    the real training path (pipeline + step + summaries + checkpoints), views/s, and
        the same compiled model's step alone, alternating --rounds times within one run,
        for fit / step (mean step times: the summary steps count; the checkpoint loops'
        end steps are timed apart and spread over --checkpoint_steps). Also the time
        per step outside the compiled function (Keras loop, callbacks) and how busy
        each phase keeps the cores.
budget: pretrain for --budget_minutes of wall clock (schedule sized from a measured step
        time) or exactly --steps, per precision in --precisions; then kNN (k=200, cosine)
        and linear-eval accuracy on the CIFAR-10 test split (in --eval_precision if given);
        the same for a random-init encoder (--norandom_init skips it).
memory: peak RSS of a train step (--depth/--width/--batch), and the loss's peak memory
        increase at --loss_batch, blockwise and with the whole 2N x 2N matrix.
conv:   per distinct conv shape of the encoder, its bf16 kernel gradient computed by
        TensorFlow's kernel and by simclr_tf.conv's patch matmul, on the activations and
        loss gradients of a real batch; which one simclr_tf.conv's rule picks.
All modes take --depth/--width/--batch/--precisions/--xla/--devices (logical CPU devices).
Times are medians (fit: means) over --repeats timed steps after --warmup untimed ones;
input and fit also leave the first pass over the data untimed (--after_first_epoch).
"""

import datetime
import json
import math
import os
import random
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10.")
flags.DEFINE_integer("depth", 18, "ResNet depth (project model).")
flags.DEFINE_float("width", 1.0, "Width multiplier.")
flags.DEFINE_integer("batch", 256, "Global batch size (images; 2 views each).")
flags.DEFINE_list("precisions", ["auto", "float32", "mixed_bfloat16"],
                  "Precisions to compare; auto is what a run picks here (duplicates and "
                  "bf16 that cannot run here are dropped).")
flags.DEFINE_bool("xla", False, "jit_compile the train steps.")
flags.DEFINE_bool("baseline", True, "Also time the plain Keras baseline (step).")
flags.DEFINE_bool("torch_baseline", True,
                  "Also time the plain PyTorch baseline (step; skipped if torch is missing).")
flags.DEFINE_integer("torch_threads", 2, "Threads for the PyTorch baseline.")
flags.DEFINE_integer("devices", 1, "Logical CPU devices; > 1 runs the project step and fit "
                     "under MirroredStrategy across them.")
flags.DEFINE_bool("batched_augment", True, "Views made per batch (else image by image).")
flags.DEFINE_bool("augment_jit_compile", True,
                  "The batched views' pixel arithmetic compiled by XLA.")
flags.DEFINE_bool("matmul_kernel_grad", True, "Project model: bf16 kernel gradients of small "
                  "conv outputs as one patch matmul (simclr_tf.conv), where a run would "
                  "use it (hardware.matmul_kernel_grad_applies).")
flags.DEFINE_bool("compare_kernel_grad", False, "step: also time the project's bf16 step "
                  "with --nomatmul_kernel_grad.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first.")
flags.DEFINE_integer("repeats", 15, "Timed steps.")
flags.DEFINE_integer("rounds", 3, "fit: alternating rounds of the training path and the "
                     "step alone (each --warmup + --repeats steps), within one run.")
flags.DEFINE_bool("after_first_epoch", True, "input/fit: time only after one pass over the "
                  "training split, when the recipes' in-memory cache serves decoded images "
                  "(as in every epoch of a run but the first); else the first pass, with "
                  "decoding.")
flags.DEFINE_integer("checkpoint_steps", 200, "fit: steps between checkpoints the save time "
                     "is spread over (the CPU recipes' value).")
flags.DEFINE_float("budget_minutes", 10.0, "budget: wall-clock pretraining budget.")
flags.DEFINE_integer("steps", 0, "budget: pretrain exactly this many steps instead (equal-step "
                     "comparisons of --precisions).")
flags.DEFINE_integer("linear_epochs", 2, "budget: linear-eval epochs on the frozen encoder.")
flags.DEFINE_integer("seed", 0, "budget: weight-init, data-order and augmentation seed.")
flags.DEFINE_bool("random_init", True, "budget: also evaluate a random-init encoder.")
flags.DEFINE_string("eval_precision", None, "budget: evaluate every encoder (kNN and linear "
                    "eval) in this precision instead of its pretraining one, so "
                    "precisions are compared on what they learned.")
flags.DEFINE_integer("loss_batch", 8192, "memory: global batch of the loss measurement.")
flags.DEFINE_string("memory_worker", None, "Internal: the one measurement a `memory` "
                    "subprocess makes.")
flags.DEFINE_string("output", None, "Write the JSON result here too.")
flags.DEFINE_bool("append", False, "Append the table to BENCHMARKS.md's history.")


def _hardware():
    from simclr_tf import hardware
    return hardware.detect("one_device")


def _machine():
    """One line: cores, CPU model and kind, and the oneDNN settings in force."""
    hw = _hardware().describe()
    line = f"{hw['cores']} cores, {hw['cpu_model']} ({hw['cpu_kind']})"
    if hw["onednn_max_cpu_isa"]:
        line += f", ONEDNN_MAX_CPU_ISA={hw['onednn_max_cpu_isa']}"
    if hw["tf_enable_onednn_opts"] is not None:
        line += f", TF_ENABLE_ONEDNN_OPTS={hw['tf_enable_onednn_opts']}"
    return line


def _cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            return next(float(l.split(":", 1)[1]) for l in f if l.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None


def fma_peak_gflops():
    """float32 FMA peak of all cores: two 256-bit FMA pipes a core (Zen 3; Zen 4, whose
    AVX-512 runs as 256-bit halves; any CPU under AVX2 kernels), at the nominal clock."""
    mhz = _cpu_mhz()
    return (os.cpu_count() or 1) * mhz * 1e-3 * 2 * 8 * 2 if mhz else None


def _precisions():
    """--precisions resolved on this machine ("auto" -> its choice), deduplicated; bf16
    left out where its kernels cannot run (hardware.Hardware.bf16_blocked)."""
    from simclr_tf import hardware
    hw, chosen = _hardware(), []
    for asked in FLAGS.precisions:
        precision = hardware.auto_precision(hw)[0] if asked == "auto" else asked
        if precision == "mixed_bfloat16" and hw.bf16_blocked:
            print(f"{asked}: bf16 kernels cannot run under ONEDNN_MAX_CPU_ISA="
                  f"{hw.onednn_max_isa} on this CPU; skipped", file=sys.stderr)
            continue
        label = f"auto ({precision})" if asked == "auto" else precision
        if precision not in [p for _, p in chosen]:
            chosen.append((label, precision))
    return chosen


def _kernel_grad(precision):
    """--matmul_kernel_grad as a run resolves it on this machine."""
    from simclr_tf import hardware
    return hardware.resolve(precision, FLAGS.matmul_kernel_grad,
                            _hardware())["matmul_kernel_grad"]


def forward_flops(encoder):
    """Multiply-adds x 2 of the convolutions and dense layers, per image."""
    import keras
    total = 0
    for layer in encoder._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape if hasattr(layer, "output") else (0, 0, 0, 0)
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def _augment():
    """The CIFAR recipes' augmentation (colour strength 0.5, no blur)."""
    from simclr_tf.config import AugmentConfig
    return AugmentConfig(color_jitter_strength=0.5, blur_prob=0.0,
                         batched_augment=FLAGS.batched_augment,
                         augment_jit_compile=FLAGS.augment_jit_compile)


def _real_batch(batch):
    """One batch of two augmented views of real CIFAR-10 training images."""
    from simclr_tf import pipeline, sources
    from simclr_tf.config import DataConfig
    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=batch, shuffle_buffer=1000)
    aug = _augment()
    return next(iter(pipeline.pretrain_dataset(source, "train", data, aug, batch)))


def _time_steps(run_step, statistic=statistics.median):
    for _ in range(FLAGS.warmup):
        run_step()
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - start)
    return statistic(times)


def _project_model(precision, width, matmul_kernel_grad):
    import keras

    from simclr_tf import builders, model as models, optimizers
    from simclr_tf.config import Config, DataConfig, LossConfig, ModelConfig, RunConfig
    keras.mixed_precision.set_global_policy(precision)
    config = Config(run=RunConfig(precision=precision, jit_compile=FLAGS.xla),
                    data=DataConfig(image_size=32),
                    model=ModelConfig(depth=FLAGS.depth, width_multiplier=width,
                                      matmul_kernel_grad=matmul_kernel_grad),
                    loss=LossConfig(temperature=0.5))
    with _strategy().scope():
        model = builders.pretrain_model(config, num_classes=10)
        optimizer = optimizers.build_optimizer("lars", 0.1, 0.9, 1e-4,
                                               models.no_decay_variables(model))
        model.compile(optimizer=optimizer, jit_compile=FLAGS.xla)
    return model, forward_flops(model.encoder)


def _strategy():
    from simclr_tf import distributed
    return distributed.make_strategy("default", num_devices=FLAGS.devices)


def _baseline_process(script, batch, precisions, env=None, extra=()):
    """Runs a baseline script on the batch in its own process; its JSON lines."""
    import subprocess
    import tempfile

    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.npz")
        np.savez(path, view1=batch["view1"].numpy(), view2=batch["view2"].numpy())
        out = subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", script), path,
             f"--width={FLAGS.width}", f"--warmup={FLAGS.warmup}",
             f"--repeats={FLAGS.repeats}", f"--precisions={','.join(precisions)}", *extra],
            check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _row(impl, precision, seconds, flops=None, computed_in=None):
    """`precision` labels the row; `computed_in` (default: the same) is the policy."""
    row = {"impl": impl, "precision": precision, "step_s": seconds,
           "views_per_s": 2 * FLAGS.batch / seconds, "images_per_s": FLAGS.batch / seconds}
    if flops:
        row["gflops_per_s"] = 3 * flops * 2 * FLAGS.batch / seconds / 1e9
        peak = fma_peak_gflops()
        if peak and (computed_in or precision) == "float32":
            row["fma_peak_share"] = row["gflops_per_s"] / peak
    return row


def _torch_rows(batch):
    """The PyTorch baseline in its own process (its thread pool never meets TF's);
    bf16 autocast only where bf16 is native (emulated, it is many times slower)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: PyTorch baseline skipped "
              "(pip install torch==2.13.0)", file=sys.stderr)
        return []
    precisions = ["float32"] + (["bf16_autocast"] if _hardware().native_bf16_cpu else [])
    return [_row("plain_pytorch", r["precision"], r["step_s"])
            for r in _baseline_process("plain_torch_simclr.py", batch, precisions,
                                       extra=[f"--threads={FLAGS.torch_threads}"])]


def _plain_keras_defaults_rows(batch):
    """Plain Keras as a user gets it: TensorFlow's defaults, in its own process, where
    this process runs with the package's TF_ENABLE_ONEDNN_OPTS (AVX2 CPUs)."""
    from simclr_tf import hardware
    if not hardware.onednn_set_by_package:
        return []
    # TensorFlow's own choice for this kind of CPU (under ONEDNN_MAX_CPU_ISA, for the
    # kind the limit stands for, which a CPU's own flags would not tell TensorFlow).
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if _hardware().tf_onednn_default else "0")
    return [_row("plain_keras, TF defaults", r["precision"], r["step_s"])
            for r in _baseline_process("plain_keras_simclr.py", batch, ["float32"], env)]


def bench_step():
    import keras

    import plain_keras_simclr
    batch = _real_batch(FLAGS.batch)
    rows = []
    for label, precision in _precisions():
        kernel_grad = _kernel_grad(precision)
        model, flops = _project_model(precision, FLAGS.width, kernel_grad)
        rows.append(_row("simclr_tf", label, _time_steps(lambda: model.train_on_batch(batch)),
                         flops, precision))
        if FLAGS.compare_kernel_grad and kernel_grad:
            model, _ = _project_model(precision, FLAGS.width, False)
            rows.append(_row("simclr_tf, native kernel gradients", label,
                             _time_steps(lambda: model.train_on_batch(batch)), flops))
        if FLAGS.baseline:
            keras.mixed_precision.set_global_policy(precision)
            plain = plain_keras_simclr.build(FLAGS.width, 32, FLAGS.xla)
            rows.append(_row("plain_keras", precision, _time_steps(
                lambda: plain.train_on_batch(batch["view1"], batch["view2"]))))
        keras.mixed_precision.set_global_policy("float32")
    if FLAGS.baseline:
        rows += _plain_keras_defaults_rows(batch)
    if FLAGS.torch_baseline:
        rows += _torch_rows(batch)
    # Ratios against what a user would otherwise run: plain Keras with TensorFlow's
    # defaults (its own process where they differ from ours), plain PyTorch.
    references = {"vs_plain_keras_float32": ("plain_keras, TF defaults", "plain_keras"),
                  "vs_pytorch_float32": ("plain_pytorch",),
                  "vs_pytorch_bf16": ("plain_pytorch",)}
    for key, impls in references.items():
        precision = "bf16_autocast" if key.endswith("bf16") else "float32"
        base = next((r for impl in impls for r in rows
                     if r["impl"] == impl and r["precision"] == precision), None)
        for r in rows if base else []:
            r[key] = base["step_s"] / r["step_s"]
    return rows


def bench_input():
    import tensorflow as tf

    from simclr_tf import pipeline, sources
    from simclr_tf.config import DataConfig
    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=FLAGS.batch, shuffle_buffer=10000, cache=True)
    aug = _augment()
    iterator = iter(pipeline.pretrain_dataset(source, "train", data, aug, FLAGS.batch))
    for _ in range(_first_epoch_steps(source) + 40):  # the cache, the shuffle buffer
        next(iterator)
    cpu_start = time.process_time()
    seconds = _time_steps(lambda: tf.nest.map_structure(lambda t: t.numpy(), next(iterator)))
    # CPU time, not only wall time: in training the pipeline takes it from the step.
    cpu_ms = 1e3 * (time.process_time() - cpu_start) / (FLAGS.warmup + FLAGS.repeats)
    return [{"impl": "simclr_tf input", "views_per_s": 2 * FLAGS.batch / seconds,
             "images_per_s": FLAGS.batch / seconds, "cpu_ms_per_batch": cpu_ms}]


def _first_epoch_steps(source):
    """Batches of one pass over the training split, if --after_first_epoch."""
    return source.num_examples("train") // FLAGS.batch if FLAGS.after_first_epoch else 0


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
            seconds = _time_steps(lambda: self.model.train_on_batch(batch), statistics.mean)
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

    from simclr_tf import sources, train

    rows = []
    batch = _real_batch(FLAGS.batch)
    loop = FLAGS.checkpoint_steps
    skip = FLAGS.warmup + _first_epoch_steps(
        sources.open_source("cifar10", FLAGS.data_dir, download=False))
    # Timed and settling steps, one deferral per round, one loop boundary per loop.
    needed = skip + FLAGS.rounds * (FLAGS.warmup + FLAGS.repeats + 1)
    total = needed + math.ceil(needed / loop) + 1
    for label, precision in _precisions():
        times = _interleaved_times(batch, skip, loop)
        with tempfile.TemporaryDirectory() as model_dir:
            config = _cifar_config("pretrain", model_dir, precision, train_steps=total,
                                   checkpoint_steps=loop, jit_compile=FLAGS.xla,
                                   eval_steps=1, knn_bank_size=256, strategy="default")
            train.run(config, extra_callbacks=[times])
        keras.mixed_precision.set_global_policy("float32")
        if not times.done:
            raise RuntimeError(f"fit ended after {len(times.step_s)} of {FLAGS.rounds} rounds")
        fit_mean = statistics.mean(x for r in times.fit_s for x in r)
        # A loop's end costs its boundary step's extra time once per `loop` steps.
        loop_end_s = (statistics.mean(times.boundary_s) - fit_mean
                      if times.boundary_s else 0.0)
        fit_s = [statistics.mean(r) + loop_end_s / loop for r in times.fit_s]
        per_round = [s / f for f, s in zip(fit_s, times.step_s)]
        fit_step = statistics.mean(fit_s)
        rows.append({"impl": "simclr_tf fit", "precision": label, "step_s": fit_step,
                     "fit_step_s_per_round": fit_s, "loop_end_extra_s": loop_end_s,
                     "loop_ends_timed": len(times.boundary_s),
                     "step_alone_s_per_round": times.step_s, "fit_vs_step_per_round": per_round,
                     "views_per_s": 2 * FLAGS.batch / fit_step,
                     "images_per_s": FLAGS.batch / fit_step,
                     "step_alone_s": statistics.mean(times.step_s),
                     "fit_vs_step": statistics.median(per_round),
                     "fit_vs_step_90pct": _bootstrap_interval(per_round),
                     "outside_function_s": fit_mean - statistics.mean(times.inside_s),
                     "cpu_share_fit": times.fit_cpu.share,
                     "cpu_share_step_alone": times.step_cpu.share})
    return rows


def _cifar_config(mode, model_dir, precision, warmup_epochs=1.0, **run):
    from simclr_tf.config import (Config, DataConfig, LossConfig, ModelConfig,
                                  OptimConfig, RunConfig)
    linear = mode == "linear_eval"
    return Config(
        run=RunConfig(**{"mode": mode, "model_dir": model_dir, "precision": precision,
                         "strategy": "one_device", "checkpoint_steps": 200,
                         "knn_bank_size": 50000, **run}),
        data=DataConfig(dataset="cifar10", data_dir=FLAGS.data_dir, batch_size=FLAGS.batch,
                        cache=True, seed=FLAGS.seed),
        model=ModelConfig(depth=FLAGS.depth, width_multiplier=FLAGS.width,
                          matmul_kernel_grad=FLAGS.matmul_kernel_grad),
        augment=_augment(),
        loss=LossConfig(temperature=0.5),
        optim=(OptimConfig(optimizer="momentum", learning_rate=0.1, warmup_epochs=0,
                           weight_decay=0.0) if linear else
               OptimConfig(learning_rate=1.0, warmup_epochs=warmup_epochs,
                           weight_decay=1e-4)))


def _budget_warmup_epochs(steps):
    """One epoch of warmup (the CPU recipe's), but at most a tenth of the budgeted steps,
    so a slow machine's short budget still completes its warmup and cosine decay."""
    return min(1.0, 0.1 * steps * FLAGS.batch / 50000)


def bench_budget():
    """Pretrain for a wall-clock budget (or --steps), then kNN and linear eval, per
    precision; then the same evaluations of a random-init encoder."""
    import tempfile

    import keras

    from simclr_tf import train
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for label, precision in _precisions():
            steps = FLAGS.steps or _budget_steps(root, precision)
            keras.mixed_precision.set_global_policy("float32")
            start = time.perf_counter()
            warmup_epochs = _budget_warmup_epochs(steps)
            model, pre = train.run(_cifar_config("pretrain", f"{root}/pre_{precision}",
                                                 precision, warmup_epochs=warmup_epochs,
                                                 train_steps=steps))
            # The schedule must have finished: warmup, then cosine decay to 0 at `steps`.
            final_lr = float(model.optimizer.learning_rate)
            pretrain_s = time.perf_counter() - start
            init = f"{root}/pre_{precision}"
            evaluated_in = FLAGS.eval_precision or precision
            knn = pre["knn_acc"] if evaluated_in == precision else _knn(root, evaluated_in, init)
            rows.append({"impl": "simclr_tf budget, pretrained", "precision": label,
                         "eval_precision": evaluated_in, "knn_acc": knn,
                         "pretrain_steps": steps, "pretrain_s": pretrain_s,
                         "budget_s": FLAGS.budget_minutes * 60 if not FLAGS.steps else None,
                         "warmup_steps": round(warmup_epochs * 50000 / FLAGS.batch),
                         "final_learning_rate": final_lr,
                         "images_per_s": steps * FLAGS.batch / pretrain_s,
                         "linear_eval_acc": _linear_eval(root, evaluated_in, init,
                                                         f"lin_{precision}")})
        if FLAGS.random_init:
            # The same kNN and linear evaluation of an untrained encoder.
            precision = FLAGS.eval_precision or _precisions()[0][1]
            rows.append({"impl": "simclr_tf budget, random init", "precision": precision,
                         "eval_precision": precision, "knn_acc": _knn(root, precision, None),
                         "linear_eval_acc": _linear_eval(root, precision, None, "lin_random")})
    return rows


def _knn(root, precision, init):
    """kNN accuracy of the encoder in checkpoint dir `init` (None: a seeded random init)."""
    import keras

    from simclr_tf import builders, callbacks, evaluation, train
    config = _cifar_config("pretrain", f"{root}/knn", precision)
    _, source = train.setup(config)  # precision policy and seed, as a training job has
    bank, query = train._knn_datasets(config, source)
    encoder = builders.pretrain_model(config, num_classes=0).encoder
    if init:
        callbacks.restore_parts({"encoder": encoder}, init)
    knn = evaluation.knn_accuracy(encoder, bank(), query(), source.num_classes,
                                  config.run.knn_k, config.run.knn_temperature)
    keras.mixed_precision.set_global_policy("float32")
    return knn


def _budget_steps(root, precision):
    """Steps that fill --budget_minutes, from the median of a short calibration run."""
    import keras

    from simclr_tf import train
    times = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    keras.mixed_precision.set_global_policy("float32")
    train.run(_cifar_config("pretrain", f"{root}/calibrate_{precision}", precision,
                            train_steps=12, eval_steps=1, knn_bank_size=256), [StepTimes()])
    step_s = statistics.median(b - a for a, b in zip(times[4:], times[5:]))
    return max(1, int(FLAGS.budget_minutes * 60 / step_s))


def _linear_eval(root, precision, init, name):
    """Linear eval in `precision` of the encoder in `init`, in its own run directory
    `name` (one per pretrained encoder: a shared one would resume the other's run)."""
    import keras

    from simclr_tf import train
    keras.mixed_precision.set_global_policy("float32")
    linear_steps = FLAGS.linear_epochs * 50000 // FLAGS.batch
    _, lin = train.run(_cifar_config("linear_eval", f"{root}/{name}", precision,
                                     train_steps=linear_steps, init_checkpoint=init))
    return lin["eval_accuracy"]


def _peak_rss():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_worker(kind):
    """One measurement in a fresh process, so ru_maxrss is its own peak."""
    import tensorflow as tf
    if kind == "step":
        precision = _precisions()[0][1]
        batch = _real_batch(FLAGS.batch)
        model, _ = _project_model(precision, FLAGS.width, _kernel_grad(precision))
        built = _peak_rss()
        for _ in range(3):
            model.train_on_batch(batch)
        return {"impl": f"ResNet-{FLAGS.depth} {FLAGS.width}x step", "precision": precision,
                "rss_after_build": built, "peak_rss": _peak_rss()}
    from simclr_tf import losses, sources
    n = FLAGS.loss_batch
    # Real CIFAR-10 pixels as 128-d "projections": the loss's memory does not depend on
    # the values, but nothing here is random.
    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    images = next(iter(source.load("train").batch(2 * n)))["image"]
    z = tf.reshape(tf.cast(images[:, ::4, ::4, :], tf.float32), [2 * n, -1])[:, :128]
    z1, z2 = z[:n], z[n:]

    @tf.function
    def loss_and_grads(z1, z2):
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            if kind == "loss_dense":
                logits, positive, _ = losses.contrastive_logits(z1, z2, 0.5)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits))
            else:
                loss, _ = losses.nt_xent(z1, z2, 0.5)
        return loss, tape.gradient(loss, [z1, z2])

    loss_and_grads.get_concrete_function(z1, z2)
    before = _peak_rss()
    _, grads = loss_and_grads(z1, z2)
    [g.numpy() for g in grads]
    return {"impl": f"NT-Xent {'whole matrix' if kind == 'loss_dense' else 'blockwise'}, "
                    f"global batch {n}", "precision": "float32",
            "peak_increase": _peak_rss() - before, "logits_matrix_bytes": (2 * n) ** 2 * 4}


def bench_memory():
    """Peak RSS of a train step, and of the loss at a large global batch (subprocesses)."""
    import subprocess
    rows = []
    jobs = [("step", [f"--precisions={p}"]) for _, p in _precisions()]
    jobs += [("loss_blockwise", []), ("loss_dense", [])]
    for kind, extra in jobs:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "memory", f"--memory_worker={kind}",
             f"--data_dir={FLAGS.data_dir}", f"--depth={FLAGS.depth}", f"--width={FLAGS.width}",
             f"--batch={FLAGS.batch}", f"--loss_batch={FLAGS.loss_batch}", "--noappend",
             *extra], check=True, capture_output=True, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def bench_conv():
    """Per distinct conv shape of the encoder: the bf16 kernel gradient by TensorFlow's
    kernel and by the patch matmul, on a real batch's activations and loss gradients."""
    import keras
    import tensorflow as tf

    from simclr_tf import conv, losses
    model, _ = _project_model("mixed_bfloat16", FLAGS.width, True)
    encoder = model.encoder
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D)]
    probe = keras.Model(encoder.input, [[l.input for l in convs], [l.output for l in convs],
                                        encoder.output["final_avg_pool"]])
    batch = _real_batch(FLAGS.batch)
    with tf.GradientTape() as tape:
        ins, outs, h = probe(tf.concat([batch["view1"], batch["view2"]], 0), training=True)
        h1, h2 = tf.split(tf.cast(h, tf.float32), 2)
        loss, _ = losses.nt_xent(h1, h2, temperature=0.5)
    douts = tape.gradient(loss, outs)
    shapes = {}
    for layer, x, dy in zip(convs, ins, douts):
        key = (tuple(x.shape[1:]), layer.kernel.shape, layer.strides[0], layer.padding.upper())
        shapes.setdefault(key, [tf.cast(x, tf.bfloat16), tf.cast(dy, tf.bfloat16), 0])[2] += 1

    def timed(fn):
        return _time_steps(lambda: fn().numpy()) * 1e3

    rows = []
    for (in_shape, kernel_shape, strides, padding), (x, dy, count) in shapes.items():
        native = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel_shape, out_backprop=dy,
            strides=[1, strides, strides, 1], padding=padding))
        matmul = tf.function(lambda: conv.matmul_kernel_grad(x, dy, kernel_shape, strides,
                                                             padding))
        out_positions = dy.shape[1] * dy.shape[2]
        picks = conv.matmul_kernel_grad_pays(out_positions, kernel_shape[0], in_shape[-1],
                                             strides)
        rows.append({"impl": "{}x{}x{} -> {}x{}x{}, {}x{} kernel, stride {}".format(
                         *in_shape, *dy.shape[1:], kernel_shape[0], kernel_shape[1], strides),
                     "layers": count, "native_ms": timed(native), "matmul_ms": timed(matmul),
                     "rule_picks": "matmul" if picks else "native"})
        print(rows[-1], file=sys.stderr, flush=True)
    chosen = sum(r["layers"] * r[f"{r['rule_picks']}_ms"] for r in rows)
    rows.append({"impl": "encoder total (layers x time)", "layers": len(convs),
                 "native_ms": sum(r["layers"] * r["native_ms"] for r in rows),
                 "matmul_ms": sum(r["layers"] * r["matmul_ms"] for r in rows),
                 "rule_picks": f"{chosen:.1f} ms with the rule's choices"})
    return rows


def _gib(r, key):
    return f"{r[key] / 2**30:.2f}" if key in r else "-"


def _optional(r, key, fmt, suffix="", scale=1):
    return format(r[key] * scale, fmt) + suffix if key in r else "-"


# mode -> (the table's columns, one result row's cells)
_TABLES = {
    "step": (["impl", "precision", "images/s", "views/s", "step s", "GFLOP/s",
              "share of fp32 FMA peak", "vs plain Keras fp32", "vs PyTorch fp32",
              "vs PyTorch bf16"],
             lambda r: [r["impl"], r.get("precision", "-"), f"{r['images_per_s']:.1f}",
                        f"{r['views_per_s']:.1f}", _optional(r, "step_s", ".3f"),
                        _optional(r, "gflops_per_s", ".0f"),
                        _optional(r, "fma_peak_share", ".0%"),
                        _optional(r, "vs_plain_keras_float32", ".2f", "x"),
                        _optional(r, "vs_pytorch_float32", ".2f", "x"),
                        _optional(r, "vs_pytorch_bf16", ".2f", "x")]),
    "input": (["impl", "images/s", "views/s", "CPU ms per batch"],
              lambda r: [r["impl"], f"{r['images_per_s']:.1f}", f"{r['views_per_s']:.1f}",
                         f"{r['cpu_ms_per_batch']:.1f}"]),
    "fit": (["impl", "precision", "images/s", "views/s",
             "fit step s (mean, incl. checkpoint share)", "step alone s (mean)",
             "fit / step per round", "fit / step (median; 90% bootstrap interval)",
             "fit / step (of means)",
             "outside compiled fn ms per step", "CPU busy: fit / step alone"],
            lambda r: [r["impl"], r["precision"], f"{r['images_per_s']:.1f}",
                       f"{r['views_per_s']:.1f}", f"{r['step_s']:.3f}",
                       f"{r['step_alone_s']:.3f}",
                       ", ".join(f"{x:.2f}" for x in r["fit_vs_step_per_round"]),
                       f"{r['fit_vs_step']:.2f}" + (
                           " ({:.2f}-{:.2f})".format(*r["fit_vs_step_90pct"])
                           if "fit_vs_step_90pct" in r else ""),
                       f"{r['step_alone_s'] / r['step_s']:.3f}",
                       _optional(r, "outside_function_s", ".1f", scale=1e3),
                       f"{r['cpu_share_fit']:.0%} / {r['cpu_share_step_alone']:.0%}"
                       if "cpu_share_fit" in r else "-"]),
    "budget": (["encoder", "precision", "evaluated in", "pretrain steps", "warmup steps",
                "final lr", "pretrain job s (incl. build, kNN)", "kNN acc", "linear eval acc"],
               lambda r: [r["impl"], r["precision"], r["eval_precision"],
                          r.get("pretrain_steps", "-"), r.get("warmup_steps", "-"),
                          _optional(r, "final_learning_rate", ".2g"),
                          _optional(r, "pretrain_s", ".0f"),
                          f"{r['knn_acc']:.2%}", f"{r['linear_eval_acc']:.2%}"]),
    "memory": (["measurement", "precision", "RSS after build GiB", "peak RSS GiB",
                "loss peak increase GiB", "one 2N x 2N float32 matrix GiB"],
               lambda r: [r["impl"], r["precision"], _gib(r, "rss_after_build"),
                          _gib(r, "peak_rss"), _gib(r, "peak_increase"),
                          _gib(r, "logits_matrix_bytes")]),
    "conv": (["conv (input -> output)", "layers", "native bf16 kernel grad ms",
              "patch matmul ms", "rule picks"],
             lambda r: [r["impl"], r["layers"], f"{r['native_ms']:.1f}",
                        f"{r['matmul_ms']:.1f}", r["rule_picks"]]),
}


def _commit():
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _append_markdown(mode, rows, command):
    columns, cells = _TABLES[mode]
    lines = [f"\n### `{mode}` - {datetime.date.today().isoformat()} - {_commit()} - "
             f"{_machine()}\n",
             f"Command: `{command}`\n",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
    with open(os.path.join(REPO, "BENCHMARKS.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    modes = {"step": bench_step, "input": bench_input, "fit": bench_fit,
             "budget": bench_budget, "memory": bench_memory, "conv": bench_conv}
    if len(argv) != 2 or argv[1] not in modes:
        print(f"usage: benchmark.py {'|'.join(modes)} [flags]", file=sys.stderr)
        return 2
    mode = argv[1]
    if FLAGS.memory_worker:
        print(json.dumps(_memory_worker(FLAGS.memory_worker)))
        return 0
    if FLAGS.devices > 1:
        from simclr_tf import distributed
        distributed.split_cpu(FLAGS.devices)
    rows = modes[mode]()
    settings = {"depth": FLAGS.depth, "width": FLAGS.width, "batch": FLAGS.batch,
                "xla": FLAGS.xla, "devices": FLAGS.devices, "steps": FLAGS.steps,
                "seed": FLAGS.seed, "eval_precision": FLAGS.eval_precision,
                "warmup": FLAGS.warmup, "repeats": FLAGS.repeats, "rounds": FLAGS.rounds,
                "after_first_epoch": FLAGS.after_first_epoch,
                "batched_augment": FLAGS.batched_augment,
                "augment_jit_compile": FLAGS.augment_jit_compile,
                "matmul_kernel_grad": FLAGS.matmul_kernel_grad}
    result = {"mode": mode, "settings": settings, "machine": _machine(),
              "hardware": _hardware().describe(), "fma_peak_gflops": fma_peak_gflops(),
              "commit": _commit(), "date": datetime.date.today().isoformat(), "rows": rows}
    print(json.dumps(result, indent=2))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=2)
    if FLAGS.append:
        _append_markdown(mode, rows, "python tools/benchmark.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    app.run(main)
