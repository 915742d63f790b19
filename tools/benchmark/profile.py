"""`profile`: where the project's train step spends its time, by TensorFlow op type.

Runs the step (as `step` builds it) --repeats times under TensorFlow's profiler and sums
each op type's time on the threads that execute ops. Two executor threads run ops side
by side, so the times are thread-milliseconds: a share says what a kind of op costs
relative to the others, not which fraction of the wall time it takes.
"""

import collections
import glob
import os
import re
import tempfile
import time

from tools.benchmark.common import project_model, real_batch, time_steps
from tools.benchmark.machine import kernel_grad_for, precisions
from tools.benchmark.options import FLAGS

# An executor's op event: "scope/op_name:OpType". Wrappers do not match:
# "ExecutorState::Process", "KernelAndDeviceFunc::Run", "EagerLocalExecute: Op".
_OP_EVENT = re.compile(r"^[^\s:]+:([A-Za-z_]\w*)$")


def op_times(space, steps):
    """{op type: (thread-ms per step, ops per step)} from an XSpace's host plane."""
    total, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if not match:
                    continue
                op = match.group(1)
                total[op] += event.duration_ps / 1e9 / steps
                count[op] += 1
    return {op: (total[op], count[op] / steps) for op in total}


def _profiled_space(run_step, steps):
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                run_step()
        finally:
            tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    return space


def bench_profile():
    batch = real_batch(FLAGS.batch)
    rows = []
    for label, precision in precisions():
        model, _ = project_model(precision, FLAGS.width, kernel_grad_for(precision))
        step_s = time_steps(lambda: model.train_on_batch(batch))
        start = time.perf_counter()
        space = _profiled_space(lambda: model.train_on_batch(batch), FLAGS.repeats)
        profiled_s = (time.perf_counter() - start) / FLAGS.repeats
        ops = op_times(space, FLAGS.repeats)
        all_ms = sum(ms for ms, _ in ops.values())
        for op, (ms, n) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
            rows.append(
                {
                    "impl": "simclr_tf",
                    "precision": label,
                    "step_s": step_s,
                    "profiled_step_s": profiled_s,
                    "op": op,
                    "thread_ms_per_step": ms,
                    "ops_per_step": n,
                    "share_of_op_time": ms / all_ms,
                }
            )
    return rows
