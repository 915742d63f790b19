"""Throughput benchmarks on real CIFAR-10 batches; JSON out, a row appended to BENCHMARKS.md.

  python tools/benchmark.py step  --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python tools/benchmark.py input --data_dir=../shared/data/tfds --batch=256
  python tools/benchmark.py fit   --data_dir=../shared/data/tfds --width=0.25 --batch=256

step:  the compiled train step alone on one real batch held in memory, for the project's
       PretrainModel and the plain Keras 3 baseline (tools/plain_keras_simclr.py), each in
       float32 and mixed_bfloat16, in this one process; views/s and GFLOP/s.
input: the tf.data augmentation pipeline alone; views/s.
fit:   the real training path (pipeline + step + summaries + checkpoints), views/s.
Times are medians over --repeats timed steps after --warmup untimed ones.
"""

import datetime
import json
import os
import platform
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
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precisions to compare.")
flags.DEFINE_bool("xla", False, "jit_compile the train steps.")
flags.DEFINE_bool("baseline", True, "Also time the plain Keras baseline (step).")
flags.DEFINE_integer("warmup", 5, "Untimed steps first.")
flags.DEFINE_integer("repeats", 15, "Timed steps.")
flags.DEFINE_string("output", None, "Write the JSON result here too.")
flags.DEFINE_bool("append", True, "Append a row to BENCHMARKS.md.")


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


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


def _real_batch(batch):
    """One batch of two augmented views of real CIFAR-10 training images."""
    from simclr_tf import pipeline, sources
    from simclr_tf.config import AugmentConfig, DataConfig
    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=batch, shuffle_buffer=1000)
    aug = AugmentConfig(color_jitter_strength=0.5, blur_prob=0.0)
    return next(iter(pipeline.pretrain_dataset(source, "train", data, aug, batch)))


def _time_steps(run_step):
    for _ in range(FLAGS.warmup):
        run_step()
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _project_model(precision, width):
    import keras

    from simclr_tf import builders, model as models, optimizers
    from simclr_tf.config import Config, DataConfig, LossConfig, ModelConfig, RunConfig
    keras.mixed_precision.set_global_policy(precision)
    config = Config(run=RunConfig(precision=precision, jit_compile=FLAGS.xla),
                    data=DataConfig(image_size=32),
                    model=ModelConfig(depth=FLAGS.depth, width_multiplier=width),
                    loss=LossConfig(temperature=0.5))
    model = builders.pretrain_model(config, num_classes=10)
    optimizer = optimizers.build_optimizer("lars", 0.1, 0.9, 1e-4,
                                           models.no_decay_variables(model))
    model.compile(optimizer=optimizer, jit_compile=FLAGS.xla)
    return model, forward_flops(model.encoder)


def bench_step():
    import keras
    import tensorflow as tf

    import plain_keras_simclr
    batch = _real_batch(FLAGS.batch)
    views = 2 * FLAGS.batch
    rows = []
    for precision in FLAGS.precisions:
        model, flops = _project_model(precision, FLAGS.width)
        seconds = _time_steps(lambda: model.train_on_batch(batch))
        rows.append({"impl": "simclr_tf", "precision": precision, "step_s": seconds,
                     "views_per_s": views / seconds, "images_per_s": FLAGS.batch / seconds,
                     "gflops_per_s": 3 * flops * views / seconds / 1e9,
                     "forward_gflops_per_view": flops / 1e9})
        if FLAGS.baseline:
            keras.mixed_precision.set_global_policy(precision)
            plain = plain_keras_simclr.build(FLAGS.width, 32, FLAGS.xla)
            seconds = _time_steps(lambda: plain.train_on_batch(batch["view1"], batch["view2"]))
            rows.append({"impl": "plain_keras", "precision": precision, "step_s": seconds,
                         "views_per_s": views / seconds, "images_per_s": FLAGS.batch / seconds})
        keras.mixed_precision.set_global_policy("float32")
    base = next((r for r in rows if r["impl"] == "plain_keras" and r["precision"] == "float32"),
                None)
    if base:
        for r in rows:
            r["vs_plain_keras_float32"] = base["step_s"] / r["step_s"]
    return rows


def bench_input():
    import tensorflow as tf

    from simclr_tf import pipeline, sources
    from simclr_tf.config import AugmentConfig, DataConfig
    source = sources.open_source("cifar10", FLAGS.data_dir, download=False)
    data = DataConfig(batch_size=FLAGS.batch, shuffle_buffer=10000, cache=True)
    aug = AugmentConfig(color_jitter_strength=0.5, blur_prob=0.0)
    iterator = iter(pipeline.pretrain_dataset(source, "train", data, aug, FLAGS.batch))
    for _ in range(FLAGS.warmup + 40):  # fill the cache and the shuffle buffer
        next(iterator)
    seconds = _time_steps(lambda: tf.nest.map_structure(lambda t: t.numpy(), next(iterator)))
    return [{"impl": "simclr_tf input", "views_per_s": 2 * FLAGS.batch / seconds,
             "images_per_s": FLAGS.batch / seconds}]


def bench_fit():
    import tempfile

    import keras

    from simclr_tf import train
    from simclr_tf.config import (AugmentConfig, Config, DataConfig, LossConfig, ModelConfig,
                                  RunConfig)
    rows = []
    for precision in FLAGS.precisions:
        times = []

        class StepTimes(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                times.append(time.perf_counter())

        steps = FLAGS.warmup + FLAGS.repeats
        with tempfile.TemporaryDirectory() as model_dir:
            config = Config(
                run=RunConfig(mode="pretrain", model_dir=model_dir, train_steps=steps,
                              checkpoint_steps=max(1, steps // 2), summary_steps=10,
                              precision=precision, jit_compile=FLAGS.xla, eval_steps=1,
                              knn_bank_size=256, strategy="one_device"),
                data=DataConfig(dataset="cifar10", data_dir=FLAGS.data_dir,
                                batch_size=FLAGS.batch, cache=True),
                model=ModelConfig(depth=FLAGS.depth, width_multiplier=FLAGS.width),
                augment=AugmentConfig(color_jitter_strength=0.5, blur_prob=0.0),
                loss=LossConfig(temperature=0.5))
            train.run(config, extra_callbacks=[StepTimes()])
        deltas = [b - a for a, b in zip(times[FLAGS.warmup - 1:], times[FLAGS.warmup:])]
        seconds = statistics.median(deltas)
        mean = (times[-1] - times[FLAGS.warmup - 1]) / len(deltas)
        rows.append({"impl": "simclr_tf fit", "precision": precision, "step_s": seconds,
                     "mean_step_s_incl_checkpoints": mean,
                     "views_per_s": 2 * FLAGS.batch / mean,
                     "images_per_s": FLAGS.batch / mean})
        keras.mixed_precision.set_global_policy("float32")
    return rows


def _append_markdown(mode, rows, command):
    path = os.path.join(REPO, "BENCHMARKS.md")
    lines = [f"\n### `{mode}` - {datetime.date.today().isoformat()} - {_machine()}\n",
             f"Command: `{command}`\n", "| impl | precision | images/s | views/s | step s | "
             "GFLOP/s | vs plain Keras fp32 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {:.1f} | {:.1f} | {} | {} | {} |".format(
            r["impl"], r.get("precision", "-"), r["images_per_s"], r["views_per_s"],
            f"{r['step_s']:.3f}" if "step_s" in r else "-",
            f"{r['gflops_per_s']:.0f}" if "gflops_per_s" in r else "-",
            f"{r['vs_plain_keras_float32']:.2f}x" if "vs_plain_keras_float32" in r else "-"))
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) != 2 or argv[1] not in ("step", "input", "fit"):
        print("usage: benchmark.py step|input|fit [flags]", file=sys.stderr)
        return 2
    mode = argv[1]
    rows = {"step": bench_step, "input": bench_input, "fit": bench_fit}[mode]()
    settings = {"depth": FLAGS.depth, "width": FLAGS.width, "batch": FLAGS.batch,
                "xla": FLAGS.xla, "warmup": FLAGS.warmup, "repeats": FLAGS.repeats}
    result = {"mode": mode, "settings": settings, "machine": _machine(),
              "date": datetime.date.today().isoformat(), "rows": rows}
    print(json.dumps(result, indent=2))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=2)
    if FLAGS.append:
        _append_markdown(mode, rows, "python tools/benchmark.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    app.run(main)
