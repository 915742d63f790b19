"""`accuracy` mode: simclr_tf and lightly's SimCLR trained on equal work, measured alike.

Both train ResNet-18 (`--width`, CIFAR stem) on CIFAR-10's training split for
`--accuracy_epochs` epochs of 195 steps (batch 256, drop-last), each seed in
`--accuracy_seeds`: simclr_tf as `flags/study_cpu.cfg` runs it (LARS lr 1.0 x B/256,
weight decay 1e-4, temperature 0.5, colour strength 0.5, no blur, warmup 98 steps then
cosine), lightly through `tools/lightly_simclr.py` with the same settings in its own
process (`--torch_python`, the environment of requirements-bench.txt), in bf16 where
simclr_tf's `auto` picks bf16. Both encoders are then scored by the studies' protocol
(tools/studies/evaluate.py: frozen features of all 50,000 / 10,000 images, kNN k 200
and a linear probe, at h and z), the PyTorch features passed as arrays.

Resumable: every (implementation, epochs, seed) cell writes `result.json` under
`--work_dir` and is skipped when it exists; an interrupted simclr_tf run resumes from its
checkpoint, and its wall time adds up its processes (tools/benchmark/resumed_time.py;
`train_processes` in the result says how many). Wall time is the training process's
own from its start to the end of training (start-up, input pipeline and first-epoch
decoding included; the PyTorch process's feature extraction afterwards excluded), so
run nothing else beside it.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import flags

from tools.benchmark import resumed_time
from tools.benchmark.options import FLAGS, REPO

flags.DEFINE_list("accuracy_epochs", ["1", "5"], "accuracy: training lengths in epochs.")
flags.DEFINE_list("accuracy_seeds", ["0", "1"], "accuracy: seeds per length.")
flags.DEFINE_list(
    "accuracy_impls", ["simclr_tf", "lightly"], "accuracy: the implementations to run."
)
flags.DEFINE_string(
    "accuracy_recipe",
    DEFAULT_RECIPE := "flags/study_cpu.cfg",
    "accuracy: simclr_tf's flagfile (lightly copies study_cpu.cfg's settings, so the "
    "comparison holds only for recipes with those settings, as flags/cifar10_cpu_long.cfg).",
)
flags.DEFINE_string(
    "work_dir", None, "accuracy: where the runs, features and results go (resumable)."
)

STEPS_PER_EPOCH = 50000 // 256  # drop-last batches of 256: what lightly's loader gives
WARMUP_STEPS = 98  # flags/study_cpu.cfg: round(0.5 epoch x 50000 / 256)
RESULT_FILE = "result.json"


def _data(work_dir, data_dir):
    """CIFAR-10 as uint8 arrays (the eval view of both splits), written once."""
    from simclr_tf.data import open_source
    from tools.studies import evaluate

    path = os.path.join(work_dir, "cifar10.npz")
    source = open_source("cifar10", data_dir=data_dir)
    if not os.path.exists(path):
        train = evaluate.load_split(source, "train", 32)
        test = evaluate.load_split(source, "test", 32)
        np.savez(
            path + ".tmp.npz",
            train_images=train.images,
            train_eval=train.images,
            test_eval=test.images,
            train_labels=train.labels,
            test_labels=test.labels,
        )
        os.replace(path + ".tmp.npz", path)
    z = np.load(path)
    splits = (
        evaluate.Split(z["train_eval"], z["train_labels"]),
        evaluate.Split(z["test_eval"], z["test_labels"]),
    )
    return path, splits


def _run(command, log_path):
    start = time.perf_counter()
    with open(log_path, "a") as log:
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])}... exited {code}; log: {log_path}")
    return time.perf_counter() - start


def _simclr_tf(cell_dir, epochs, seed, data_dir, splits):
    from tools.studies import evaluate

    command = [
        sys.executable,
        "-m",
        "simclr_tf.main",
        f"--flagfile={FLAGS.accuracy_recipe}",
        f"--model_dir={cell_dir}",
        f"--train_steps={STEPS_PER_EPOCH * epochs}",
        f"--width_multiplier={FLAGS.width}",
        f"--seed={seed}",
        f"--checkpoint_steps={STEPS_PER_EPOCH}",
    ]
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    seconds, processes = resumed_time.timed(
        cell_dir, lambda: _run(command, os.path.join(cell_dir, "train.log"))
    )
    scores = evaluate.evaluate_run(cell_dir, *splits, num_classes=10, seed=seed)
    return seconds, {**scores, "train_processes": processes}


def _lightly(cell_dir, epochs, seed, data_path, splits, bf16):
    from tools.studies import evaluate

    if not FLAGS.torch_python:
        raise ValueError("--torch_python is required for the lightly runs")
    out = os.path.join(cell_dir, "features.npz")
    command = [
        FLAGS.torch_python,
        "tools/lightly_simclr.py",
        f"--data={data_path}",
        f"--out={out}",
        f"--epochs={epochs}",
        f"--steps_per_epoch={STEPS_PER_EPOCH}",
        f"--warmup_steps={WARMUP_STEPS}",
        f"--seed={seed}",
        f"--width={FLAGS.width}",
        f"--threads={FLAGS.torch_threads}",
        *(["--bf16"] if bf16 else []),
    ]
    _run(command, os.path.join(cell_dir, "train.log"))
    z = np.load(out)
    features = {"h": [z["h_train"], z["h_test"]], "z": [z["z_train"], z["z_test"]]}
    seconds = _lightly_training_seconds(cell_dir)
    return seconds, evaluate.evaluate_features(features, *splits, num_classes=10, seed=seed)


def _impl_dir(impl):
    """Cells of another simclr_tf recipe are other runs: they get their own folder."""
    if impl != "simclr_tf" or FLAGS.accuracy_recipe == DEFAULT_RECIPE:
        return impl
    return f"{impl}-{os.path.splitext(os.path.basename(FLAGS.accuracy_recipe))[0]}"


def _lightly_training_seconds(cell_dir):
    """Process start to the end of training, as simclr_tf's process is timed: the
    PyTorch process goes on to extract features, which simclr_tf's run does not."""
    return float(np.load(os.path.join(cell_dir, "features.npz"))["seconds"])


def _auto_is_bf16():
    from simclr_tf import hardware

    policy, _ = hardware.auto_precision(hardware.detect("default"))
    return policy == "mixed_bfloat16"


def bench_accuracy():
    if not FLAGS.work_dir:
        raise ValueError("--work_dir is required (a directory outside the repository)")
    unknown = set(FLAGS.accuracy_impls) - {"simclr_tf", "lightly"}
    if unknown:
        raise ValueError(f"--accuracy_impls: unknown {sorted(unknown)} (simclr_tf, lightly)")
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    data_path, splits = _data(FLAGS.work_dir, FLAGS.data_dir)
    bf16 = _auto_is_bf16()
    results = []
    for seed in (int(s) for s in FLAGS.accuracy_seeds):
        for epochs in (int(e) for e in FLAGS.accuracy_epochs):
            for impl in FLAGS.accuracy_impls:
                cell_dir = os.path.join(
                    FLAGS.work_dir, _impl_dir(impl), f"epochs{epochs}_seed{seed}"
                )
                path = os.path.join(cell_dir, RESULT_FILE)
                if os.path.exists(path):
                    with open(path) as f:
                        result = json.load(f)
                    if impl == "lightly":  # cells written before the timing was fixed
                        result["train_seconds"] = _lightly_training_seconds(cell_dir)
                    results.append(result)
                    continue
                os.makedirs(cell_dir, exist_ok=True)
                print(f"accuracy: {impl}, {epochs} epoch(s), seed {seed}", flush=True)
                if impl == "simclr_tf":
                    seconds, scores = _simclr_tf(cell_dir, epochs, seed, FLAGS.data_dir, splits)
                else:
                    seconds, scores = _lightly(cell_dir, epochs, seed, data_path, splits, bf16)
                result = {
                    "impl": impl,
                    **({"recipe": FLAGS.accuracy_recipe} if impl == "simclr_tf" else {}),
                    "epochs": epochs,
                    "seed": seed,
                    "steps": STEPS_PER_EPOCH * epochs,
                    "precision": "bf16" if bf16 else "float32",
                    "train_seconds": seconds,
                    **scores,
                }
                with open(path + ".tmp", "w") as f:
                    json.dump(result, f, indent=2)
                os.replace(path + ".tmp", path)
                print(f"accuracy: {json.dumps(result)}", flush=True)
                results.append(result)
    return summarize(results)


def summarize(results):
    """One row per (implementation, epochs): mean and sample s.d. over seeds."""
    rows = []
    keys = sorted(
        {(r["epochs"], r["impl"]) for r in results}, key=lambda k: (k[0], k[1] != "simclr_tf")
    )
    for epochs, impl in keys:
        cell = [r for r in results if r["epochs"] == epochs and r["impl"] == impl]
        row = {
            "impl": impl,
            "epochs": epochs,
            "seeds": len(cell),
            "precision": cell[0]["precision"],
        }
        for kind in ("h", "z"):
            for metric in ("knn_acc", "linear_acc"):
                values = np.array([r[kind][metric] for r in cell])
                row[f"{kind}_{metric}"] = float(values.mean())
                row[f"{kind}_{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
        seconds = [r["train_seconds"] for r in cell]
        # None: a run resumed from checkpoints whose training time was not recorded.
        row["train_seconds"] = None if None in seconds else float(np.mean(seconds))
        row["train_processes"] = max(r.get("train_processes", 1) for r in cell)
        rows.append(row)
    return rows
