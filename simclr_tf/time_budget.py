"""Training for a wall-clock budget (`--time_budget=30m`): how many steps fit, and the
callback that measures the run and sets its length and schedule.

A run's wall time is its steps plus what happens between them (checkpoint saves, the
kNN monitor, the input pipeline's first pass) plus the evaluation after training. The
run times its first steps once the train function is compiled and plans the length
that ends, evaluation included, within the budget less a safety margin; the warmup
and cosine decay are set over exactly those steps (`schedules.PlannedWarmupCosine`).
At every checkpoint loop it compares the measured cost per step (the step itself plus
its share of the loop's saves and monitor) with the plan's; when the last
`RATE_WINDOW_LOOPS` loops are all past `DRIFT` the same way, it plans once more from
their mean, continuing the schedule without a jump in the
learning rate. The plan is written to the run directory and a resumed run keeps it.

`Planner` is plain arithmetic on times it is given, so it is tested with a fake clock;
`callbacks.BudgetCallback` gives it the run's times. No TensorFlow at import: the
flags are checked with `parse_duration` before TensorFlow loads.
"""

import dataclasses
import json
import math
import os
import re
import time

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
PLAN_FILE = "time_budget.json"
# A measured cost per step this far off the plan's re-plans (once). The first plan is
# timed during the first pass over the data, which also reads and caches it: a real
# 10-minute CIFAR-10 run measured 0.498 s a step then and 0.44 s after (12% off, under
# the 15% first used here, so 13% of its budget went unused).
DRIFT = 0.08
# The going rate the drift check compares is the mean over this many checkpoint loops:
# a 30-minute run's single 200-step loops varied from 278 to 323 ms a step on a quiet
# machine, so one loop 8.6% slow re-planned it (its one re-plan) for a rate the rest of
# the run never had, and it ended early. A re-plan now needs every one of the last
# three loops off the plan the same way, and plans with their mean rate.
RATE_WINDOW_LOOPS = 3
MARGIN = 0.03  # of the budget, kept free for what the estimates miss
# A step is a forward and a backward pass (about 3 forward passes' work) of every
# view; evaluating one image is one forward pass. Evaluation also decodes images and
# runs outside the compiled step, so its estimate is doubled.
EVAL_COST_FACTOR = 2.0
# A short budget still gets its cosine decay: warmup at most this share of the run.
WARMUP_CAP = 0.1


class BudgetError(ValueError):
    """A budget that cannot be read, or is too short for any training."""


def parse_duration(text):
    """Seconds in '90s', '30m', '2h', '1h30m' or a bare number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise BudgetError(
                f"--time_budget={text!r}: give a duration such as 90s, 30m, 2h or 1h30m"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise BudgetError(f"--time_budget={text!r} must be longer than 0")
    return seconds


@dataclasses.dataclass(frozen=True)
class Plan:
    budget_s: float
    steps: int  # the run's length in optimizer steps
    warmup_steps: int
    planned_at_step: int
    step_s: float  # measured seconds per step (compiled call / steps per call)
    overhead_per_step_s: float  # saves and monitor per checkpoint loop, per step
    reserve_s: float  # the evaluation after training, estimated
    elapsed_s: float  # run time when planned
    expected_end: float  # unix time
    replans: int = 0
    schedule: dict | None = None  # the learning-rate schedule's state after planning

    def line(self):
        end = time.strftime("%H:%M:%S", time.localtime(self.expected_end))
        return (
            f"time budget {self.budget_s:.0f}s: {self.steps} steps "
            f"({self.steps - self.planned_at_step} after step {self.planned_at_step} at "
            f"{self.step_s:.3f}s/step + {self.overhead_per_step_s:.3f}s/step saves and "
            f"monitor), warmup {self.warmup_steps}, {self.reserve_s:.0f}s kept for the "
            f"final evaluation, expected end {end}"
            + (f" (re-planned {self.replans}x)" if self.replans else "")
        )


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the planner needs to know about the run besides times."""

    budget_s: float
    batch_size: int
    views: int  # images per example in a step: 2 for pretraining, 1 for classifiers
    eval_images: float  # images the evaluation after training runs forward (in views' pixels)
    warmup_steps: int  # as --warmup_epochs asks, at most WARMUP_CAP of the planned run
    steps_per_execution: int = 1
    monitor_images_per_step: float = 0.0  # the kNN monitor's forward images, per step


def workload(config, views, eval_images, steps_per_epoch, monitor_images_per_step=0.0):
    """The `Workload` of a `--time_budget` run (a `config.Config`), else None."""
    if not config.run.time_budget:
        return None
    return Workload(
        budget_s=parse_duration(config.run.time_budget),
        batch_size=config.data.batch_size,
        views=views,
        eval_images=eval_images,
        warmup_steps=int(round(config.optim.warmup_epochs * steps_per_epoch)),
        monitor_images_per_step=monitor_images_per_step,
    )


def pretrain_workload(config, steps_per_epoch, queries, bank, monitor_every_loops):
    """Pretraining's: two views a step; after training the kNN evaluation (`bank` +
    `queries` images; also every `monitor_every_loops` checkpoint loops) and the
    probe's (`queries`)."""
    size = config.data.image_size
    # Evaluated images are --image_size, the step's views may be smaller: count each in
    # views' pixels.
    pixels = (size / config.augment.view_side(size)) ** 2
    knn = (bank + queries) * pixels if bank else 0
    probe = queries * pixels if config.model.linear_probe else 0
    every = monitor_every_loops * config.run.checkpoint_steps
    return workload(config, 2, knn + probe, steps_per_epoch, knn / every if every else 0.0)


def forward_seconds_per_image(step_s, workload):
    return step_s / (3.0 * workload.views * workload.batch_size)


class Planner:
    """Plans (and re-plans once) the run's length from measured times."""

    RATE_WINDOW_LOOPS = RATE_WINDOW_LOOPS

    def __init__(self, workload, plan=None):
        self.workload = workload
        self.plan = plan

    def _reserve(self, step_s, startup_s):
        w = self.workload
        evaluation = w.eval_images * forward_seconds_per_image(step_s, w) * EVAL_COST_FACTOR
        # The evaluation traces its own functions, as the train function was.
        return evaluation + startup_s

    def estimated_overhead(self, step_s):
        """Seconds per step for the kNN monitor, before it has been timed (saves are
        measured later, by the drift check)."""
        w = self.workload
        return w.monitor_images_per_step * forward_seconds_per_image(step_s, w) * EVAL_COST_FACTOR

    def make_plan(self, step, elapsed_s, step_s, overhead_per_step_s, startup_s, now):
        """The plan that, at `step` after `elapsed_s` seconds, ends within the budget."""
        w = self.workload
        reserve = self._reserve(step_s, startup_s)
        available = w.budget_s * (1 - MARGIN) - elapsed_s - reserve
        per_step = step_s + overhead_per_step_s
        more = max(0, math.floor(available / per_step))
        steps = step + more
        spe = max(1, w.steps_per_execution)
        steps = max(step + 1, steps - steps % spe)
        replans = 0 if self.plan is None else self.plan.replans + 1
        if self.plan is not None and self.plan.warmup_steps <= step:
            warmup = self.plan.warmup_steps  # reached: it stays where it was
        else:
            warmup = max(min(w.warmup_steps, round(WARMUP_CAP * steps)), step + 1)
        warmup = min(warmup, max(steps - 1, 0))  # the cosine gets at least the last step
        self.plan = Plan(
            budget_s=w.budget_s,
            steps=steps,
            warmup_steps=min(warmup, steps),
            planned_at_step=step,
            step_s=step_s,
            overhead_per_step_s=overhead_per_step_s,
            reserve_s=reserve,
            elapsed_s=elapsed_s,
            expected_end=now + (steps - step) * per_step + reserve,
            replans=replans,
        )
        return self.plan

    def drift(self, step_s, overhead_per_step_s):
        """+1 (-1) if the measured cost per step is more than DRIFT above (below) the
        plan's, else 0."""
        p = self.plan
        change = (step_s + overhead_per_step_s) / (p.step_s + p.overhead_per_step_s) - 1
        return 1 if change > DRIFT else -1 if change < -DRIFT else 0


def read_plan(model_dir):
    """The plan a run directory holds, or None."""
    import tensorflow as tf

    path = os.path.join(model_dir, PLAN_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return Plan(**json.load(f))


def write_plan(model_dir, plan):
    """time_budget.json, and the plan added to config.json (both written atomically)."""
    import tensorflow as tf

    from simclr_tf import run_dirs

    record = dataclasses.asdict(plan)
    run_dirs.write_json_atomic(os.path.join(model_dir, PLAN_FILE), record)
    config_path = os.path.join(model_dir, run_dirs.CONFIG_FILE)
    if tf.io.gfile.exists(config_path):
        with tf.io.gfile.GFile(config_path) as f:
            config = json.load(f)
        config["time_budget_plan"] = record
        run_dirs.write_json_atomic(config_path, config)
