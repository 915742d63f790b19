"""`memory`: peak RSS of a train step, and of the loss at a large global batch."""

import json
import os
import sys

from tools.benchmark.common import project_model, real_batch
from tools.benchmark.machine import kernel_grad_for, precisions
from tools.benchmark.options import FLAGS, REPO


def _peak_rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_worker(kind):
    """One measurement in a fresh process, so ru_maxrss is its own peak."""
    import tensorflow as tf

    if kind == "step":
        precision = precisions()[0][1]
        batch = real_batch(FLAGS.batch)
        model, _ = project_model(precision, FLAGS.width, kernel_grad_for(precision))
        built = _peak_rss()
        for _ in range(3):
            model.train_on_batch(batch)
        return {
            "impl": f"ResNet-{FLAGS.depth} {FLAGS.width}x step",
            "precision": precision,
            "rss_after_build": built,
            "peak_rss": _peak_rss(),
        }
    from simclr_tf import data as sources
    from simclr_tf import losses

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
                    tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits)
                )
            else:
                loss, _ = losses.nt_xent(z1, z2, 0.5)
        return loss, tape.gradient(loss, [z1, z2])

    loss_and_grads.get_concrete_function(z1, z2)
    before = _peak_rss()
    _, grads = loss_and_grads(z1, z2)
    [g.numpy() for g in grads]
    return {
        "impl": f"NT-Xent {'whole matrix' if kind == 'loss_dense' else 'blockwise'}, "
        f"global batch {n}",
        "precision": "float32",
        "peak_increase": _peak_rss() - before,
        "logits_matrix_bytes": (2 * n) ** 2 * 4,
    }


def bench_memory():
    """Peak RSS of a train step, and of the loss at a large global batch (subprocesses)."""
    import subprocess

    rows = []
    jobs = [("step", [f"--precisions={p}"]) for _, p in precisions()]
    jobs += [("loss_blockwise", []), ("loss_dense", [])]
    for kind, extra in jobs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.benchmark",
                "memory",
                f"--memory_worker={kind}",
                f"--data_dir={FLAGS.data_dir}",
                f"--depth={FLAGS.depth}",
                f"--width={FLAGS.width}",
                f"--batch={FLAGS.batch}",
                f"--loss_batch={FLAGS.loss_batch}",
                "--noappend",
                *extra,
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows
