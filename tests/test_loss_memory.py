"""NT-Xent at a global batch of 8192 stays below one 2N x 2N logits matrix of memory."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

_SCRIPT = r"""
import json, resource, sys
import tensorflow as tf
from simclr_tf import losses
n, dense = int(sys.argv[1]), sys.argv[2] == "dense"
z1 = tf.random.stateless_normal([n, 128], [1, 2])
z2 = z1 + 0.1 * tf.random.stateless_normal([n, 128], [3, 4])

@tf.function
def loss_and_grads(z1, z2):
    with tf.GradientTape() as tape:
        tape.watch([z1, z2])
        if dense:  # the whole [2N, 2N] matrix, as a plain implementation forms it
            logits, positive, _ = losses.contrastive_logits(z1, z2, 0.5)
            # the reference's scale: both directions of each of the n pairs
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits)) / n
        else:
            loss, _ = losses.nt_xent(z1, z2, 0.5)
    return loss, tape.gradient(loss, [z1, z2])

loss_and_grads.get_concrete_function(z1, z2)
# The resident size now, not the high-water mark so far: memory freed since a higher
# peak (tracing, start-up) would otherwise be reused unseen and hide an allocation.
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
loss, grads = loss_and_grads(z1, z2)
[g.numpy() for g in grads]
# VmHWM: this process image's peak. (getrusage's ru_maxrss survives exec, so a child
# of a large pytest process would report its parent's peak.)
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps({"loss": float(loss), "peak_increase": peak - before}))
"""


def _peak_increase(n, kind):
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(n), kind],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO},
    ).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow  # half a minute of two subprocesses; tests/test_losses.py checks the
# blockwise loss's values and gradients in the default suite.
def test_loss_at_global_batch_8192_holds_less_than_one_logits_matrix():
    n = 8192
    matrix_bytes = (2 * n) ** 2 * 4  # one float32 2N x 2N matrix: 1 GiB
    blockwise = _peak_increase(n, "blockwise")
    # What running any step costs beside the loss (thread pools, the runtime's own
    # buffers; about 0.5 GiB here), from the same step at a batch whose loss needs
    # 2 MiB: the loss's own share is the rest.
    runtime = _peak_increase(512, "blockwise")["peak_increase"]
    assert blockwise["peak_increase"] - runtime < matrix_bytes, (blockwise, runtime)
    # The measurement can see a matrix: the dense loss must hold its whole 2N x 2N
    # logits at once (how many more copies it makes depends on the CPU's kernels).
    dense = _peak_increase(n, "dense")
    assert dense["peak_increase"] > matrix_bytes, dense
    assert abs(dense["loss"] - blockwise["loss"]) < 1e-3 * abs(dense["loss"])
