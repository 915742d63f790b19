"""Training wall time of a benchmark cell that may be interrupted and resumed.

A resumed training process times only what it runs itself, so without this a cell
interrupted once would report a fraction of its real wall time, silently. Each
process is recorded in `train_clock.json` before it starts. One that finishes adds its
own time; one that was killed counts from its start to its newest checkpoint, at the
time TensorFlow's checkpoint state records for it (the steps after that checkpoint are
trained again and timed then). A resumed run's second start-up is in the total, so it
is an upper bound by one start-up per resume.
"""

import json
import os
import time

import tensorflow as tf

from simclr_tf.run_dirs import write_json_atomic

CLOCK_FILE = "train_clock.json"


def timed(run_dir, run):
    """Calls `run()` (returns its own seconds); the run's total so far and its count of
    processes. The total is None when checkpoints predate the record (time unknown)."""
    path = os.path.join(run_dir, CLOCK_FILE)
    clock = _load(path)
    if clock is None:
        unknown = _newest_checkpoint_time(run_dir) is not None
        clock = {"segments": [{"seconds": None, "ended": "before_record"}] if unknown else []}
    if clock.get("open_since") is not None:
        clock["segments"].append(_killed_segment(run_dir, clock.pop("open_since")))
    clock["open_since"] = time.time()
    write_json_atomic(path, clock)
    seconds = run()
    clock["segments"].append({"seconds": seconds, "ended": "finished"})
    clock["open_since"] = None
    write_json_atomic(path, clock)
    return _total_seconds(clock), len(clock["segments"])


def _total_seconds(clock):
    times = [s["seconds"] for s in clock["segments"]]
    return None if any(t is None for t in times) else float(sum(times))


def _killed_segment(run_dir, since):
    newest = _newest_checkpoint_time(run_dir)
    kept = max(0.0, newest - since) if newest is not None else 0.0
    return {"seconds": kept, "ended": "killed; counted to its last checkpoint"}


def _newest_checkpoint_time(run_dir):
    state = tf.train.get_checkpoint_state(run_dir)
    times = state.all_model_checkpoint_timestamps if state else ()
    return max(times) if times else None


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
