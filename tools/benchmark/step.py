"""`step`: the compiled train step alone, against plain Keras and PyTorch baselines."""

import json
import os
import sys

from tools.benchmark.common import project_model, real_batch, time_steps
from tools.benchmark.machine import (
    kernel_grad_for,
    matmul_gflops,
    peak_gflops,
    precisions,
    this_hardware,
)
from tools.benchmark.options import FLAGS, REPO


def _baseline_process(script, batch, precisions, env=None, extra=(), python=None):
    """Runs a baseline script on the batch in its own process (`python`, default this
    one); its JSON lines."""
    import subprocess
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.npz")
        np.savez(path, view1=batch["view1"].numpy(), view2=batch["view2"].numpy())
        out = subprocess.run(
            [
                python or sys.executable,
                os.path.join(REPO, "tools", script),
                path,
                f"--width={FLAGS.width}",
                f"--warmup={FLAGS.warmup}",
                f"--repeats={FLAGS.repeats}",
                f"--precisions={','.join(precisions)}",
                *extra,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _row(impl, precision, seconds, flops=None, computed_in=None):
    """`precision` labels the row; `computed_in` (default: the same) is the policy."""
    row = {
        "impl": impl,
        "precision": precision,
        "step_s": seconds,
        "views_per_s": 2 * FLAGS.batch / seconds,
        "images_per_s": FLAGS.batch / seconds,
    }
    if flops:
        row["gflops_per_s"] = 3 * flops * 2 * FLAGS.batch / seconds / 1e9
        policy = computed_in or precision
        peak = peak_gflops(policy)
        if peak:
            row["nominal_peak_share"] = row["gflops_per_s"] / peak
        rate = matmul_gflops(policy)
        if rate:
            row["matmul_share"] = row["gflops_per_s"] / rate
    return row


def _torch_rows(batch):
    """The PyTorch baseline in its own process (its thread pool never meets TF's);
    bf16 autocast only where bf16 is native (emulated, it is many times slower).
    --torch_python names another environment's Python (requirements-bench.txt)."""
    if not FLAGS.torch_python:
        try:
            import torch  # noqa: F401
        except ImportError:
            print(
                "torch is not installed: PyTorch baseline skipped (pip install torch==2.13.0,"
                " or --torch_python=PATH)",
                file=sys.stderr,
            )
            return []
    precisions = ["float32"] + (["bf16_autocast"] if this_hardware().native_bf16_cpu else [])
    return [
        _row("plain_pytorch", r["precision"], r["step_s"])
        for r in _baseline_process(
            "plain_torch_simclr.py",
            batch,
            precisions,
            extra=[f"--threads={FLAGS.torch_threads}"],
            python=FLAGS.torch_python,
        )
    ]


def _plain_keras_defaults_rows(batch):
    """Plain Keras as a user gets it: TensorFlow's defaults, in its own process, where
    this process runs with the package's TF_ENABLE_ONEDNN_OPTS (AVX2 CPUs)."""
    from simclr_tf import hardware

    if not hardware.onednn_set_by_package:
        return []
    # TensorFlow's own choice for this kind of CPU (under ONEDNN_MAX_CPU_ISA, for the
    # kind the limit stands for, which a CPU's own flags would not tell TensorFlow).
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if this_hardware().tf_onednn_default else "0")
    return [
        _row("plain_keras, TF defaults", r["precision"], r["step_s"])
        for r in _baseline_process("plain_keras_simclr.py", batch, ["float32"], env)
    ]


def bench_step():
    import keras

    from tools import plain_keras_simclr

    batch = real_batch(FLAGS.batch)
    rows = []
    for label, precision in precisions():
        kernel_grad = kernel_grad_for(precision)
        model, flops = project_model(precision, FLAGS.width, kernel_grad)
        rows.append(
            _row(
                "simclr_tf",
                label,
                time_steps(lambda: model.train_on_batch(batch)),
                flops,
                precision,
            )
        )
        if FLAGS.compare_kernel_grad and kernel_grad:
            model, _ = project_model(precision, FLAGS.width, False)
            rows.append(
                _row(
                    "simclr_tf, native kernel gradients",
                    label,
                    time_steps(lambda: model.train_on_batch(batch)),
                    flops,
                )
            )
        if FLAGS.baseline:
            keras.mixed_precision.set_global_policy(precision)
            plain = plain_keras_simclr.build(FLAGS.width, 32, FLAGS.xla)
            rows.append(
                _row(
                    "plain_keras",
                    precision,
                    time_steps(lambda: plain.train_on_batch(batch["view1"], batch["view2"])),
                )
            )
        keras.mixed_precision.set_global_policy("float32")
    if FLAGS.baseline:
        rows += _plain_keras_defaults_rows(batch)
    if FLAGS.torch_baseline:
        rows += _torch_rows(batch)
    # Ratios against what a user would otherwise run: plain Keras with TensorFlow's
    # defaults (its own process where they differ from ours), plain PyTorch.
    references = {
        "vs_plain_keras_float32": ("plain_keras, TF defaults", "plain_keras"),
        "vs_pytorch_float32": ("plain_pytorch",),
        "vs_pytorch_bf16": ("plain_pytorch",),
    }
    for key, impls in references.items():
        precision = "bf16_autocast" if key.endswith("bf16") else "float32"
        base = next(
            (
                r
                for impl in impls
                for r in rows
                if r["impl"] == impl and r["precision"] == precision
            ),
            None,
        )
        for r in rows if base else []:
            r[key] = base["step_s"] / r["step_s"]
    return rows
