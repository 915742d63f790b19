"""Keras callbacks for long runs: checkpoint saves, exact stop step, divergence, monitors.

Training runs as `fit` "epochs" of `checkpoint_steps` steps; a checkpoint is written
at the end of each, so a rerun resumes at the last one (optimizer state and step
included) and `StopAtStep` ends exactly at the requested step.
"""

import collections
import dataclasses
import math
import time

import keras
import tensorflow as tf
from absl import logging

from simclr_tf import evaluation
from simclr_tf.models import representation_health


class NonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite, and remembers it,
    so `SaveCheckpoint` never saves (and never rotates good checkpoints out for) a
    model that has diverged. A step's loss is computed before its update, so a save
    also checks the weights themselves (`weights_finite`)."""

    def __init__(self):
        super().__init__()
        self.step = None  # the first step found non-finite

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and self.step is None and not math.isfinite(float(loss)):
            self._diverged()

    def weights_finite(self):
        """True if every variable is finite (BN moving statistics and the optimizer's
        slots included); else marks the divergence and stops."""
        variables = list(self.model.variables) + list(self.model.optimizer.variables)
        finite = all(
            bool(tf.reduce_all(tf.math.is_finite(v)))
            for v in variables
            if tf.as_dtype(v.dtype).is_floating
        )
        if not finite and self.step is None:
            self._diverged()
        return finite

    def _diverged(self):
        self.step = int(self.model.optimizer.iterations.numpy())
        self.model.stop_training = True


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves at the end of every checkpoint loop and of training. `save_now` is the one
    save path of a run (preemption saves call it too), so nothing non-finite is saved."""

    def __init__(self, manager, guard=None):
        super().__init__()
        self.manager = manager
        self.guard = guard  # a NonFiniteLoss: nothing is saved once it fired
        self.last_saved = None

    def save_now(self):
        """Saves the current step unless the run diverged; returns (step, path), or
        None when nothing was saved (diverged, or this step is saved already)."""
        if self.guard is not None and (
            self.guard.step is not None or not self.guard.weights_finite()
        ):
            return None
        step = int(self.model.optimizer.iterations.numpy())
        if step != self.last_saved:
            self.last_saved = step
            return step, self.manager.save(step)
        return None

    def on_epoch_end(self, epoch, logs=None):
        self.save_now()

    def on_train_end(self, logs=None):
        self.save_now()


class StopAtStep(keras.callbacks.Callback):
    """Stops at `total_steps` applied updates; counts batches that applied none.

    Under float16 loss scaling a batch with non-finite gradients is skipped and does
    not advance `optimizer.iterations`. Called once per compiled call (each runs
    `steps_per_execution` batches), it reads the step once per call, not per batch.
    """

    def __init__(self, total_steps):
        super().__init__()
        self.total_steps = total_steps
        self.skipped = 0
        self._last = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._last = self._step()

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        self.skipped += max(0, self.model.steps_per_execution - (step - self._last))
        self._last = step
        if step >= self.total_steps:
            self.model.stop_training = True


class KnnMonitor(keras.callbacks.Callback):
    """Adds `knn_acc` to the epoch logs every `every_epochs` fit epochs (0: never)."""

    def __init__(
        self, bank_dataset_fn, query_dataset_fn, num_classes, every_epochs, k=200, temperature=0.1
    ):
        super().__init__()
        self.bank_dataset_fn = bank_dataset_fn
        self.query_dataset_fn = query_dataset_fn
        self.num_classes = num_classes
        self.every_epochs = max(1, round(every_epochs)) if every_epochs > 0 else 0
        self.k, self.temperature = k, temperature
        self.last = None

    def evaluate(self):
        start = time.time()
        self.last = evaluation.knn_accuracy(
            self.model.encoder,
            self.bank_dataset_fn(),
            self.query_dataset_fn(),
            self.num_classes,
            self.k,
            self.temperature,
            strategy=self.model.distribute_strategy,  # replicated like training
        )
        logging.info("kNN accuracy %.4f (%.1fs)", self.last, time.time() - start)
        return self.last

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0 and logs is not None:
            logs["knn_acc"] = self.evaluate()


class SkippedImages(keras.callbacks.Callback):
    """Reports how many corrupt or unreadable images the input pipeline skipped."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_images"] = self.counter.value
        if self.counter.value:
            logging.warning("%d unreadable images skipped so far", self.counter.value)


class BudgetCallback(keras.callbacks.Callback):
    """Times the run, plans its length after `skip_calls` + `timed_calls` compiled
    calls, and checks the plan at the end of every checkpoint loop, re-planning once
    if the cost per step drifted: the step's own time over the last
    `planner.RATE_WINDOW_LOOPS` loops (the going rate) plus everything between
    steps (saves, monitor) since the plan, per step.

    `stopper` (a `callbacks.StopAtStep`) and `schedule` (a `PlannedWarmupCosine`) are
    set to each plan; `on_plan(plan)` stores it (the chief writes it)."""

    def __init__(
        self,
        planner,
        schedule,
        stopper,
        start_time,
        on_plan,
        skip_calls=2,
        timed_calls=10,
        clock=time.time,
    ):
        super().__init__()
        self.planner, self.schedule, self.stopper = planner, schedule, stopper
        self.start_time, self.on_plan, self.clock = start_time, on_plan, clock
        self.skip_calls, self.timed_calls = skip_calls, timed_calls
        self.calls = 0
        self._begin = None
        self._timed = []  # (seconds, steps) of the calls timed for the first plan
        self._startup_s = 0.0
        self._since = None  # (time, step) the plan was made at
        self._stepping_since_plan = 0.0  # seconds inside compiled calls since then
        self._loop = [0.0, 0]  # seconds and steps inside compiled calls this loop
        self._recent = collections.deque(maxlen=planner.RATE_WINDOW_LOOPS)  # loops

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = (self.clock(), self._step())

    def on_train_batch_end(self, batch, logs=None):
        if self._begin is None:
            return
        now, step = self.clock(), self._step()
        seconds, steps = now - self._begin[0], step - self._begin[1]
        self.calls += 1
        if self.calls == 1:
            # The first call traces and compiles the step; evaluation will do the same.
            self._startup_s = seconds
        if self.planner.plan is not None:
            self._stepping_since_plan += seconds
            self._loop[0] += seconds
            self._loop[1] += steps
            return
        if self.calls > self.skip_calls:
            self._timed.append((seconds, steps))
        if len(self._timed) >= self.timed_calls:
            step_s = sum(t for t, _ in self._timed) / max(1, sum(n for _, n in self._timed))
            self._apply(step, now, step_s, self.planner.estimated_overhead(step_s))

    def on_epoch_end(self, epoch, logs=None):
        plan = self.planner.plan
        loop_seconds, loop_steps = self._loop
        self._loop = [0.0, 0]
        if plan is None or plan.replans or self._since is None or loop_steps < 1:
            return
        self._recent.append((loop_seconds, loop_steps))
        now, step = self.clock(), self._step()
        t0, s0 = self._since
        if step >= plan.steps or len(self._recent) < self._recent.maxlen:
            return
        overhead_s = max(0.0, (now - t0) - self._stepping_since_plan) / max(1, step - s0)
        # A new rate, not noise: every loop of the window drifted, the same way.
        rates = [t / n for t, n in self._recent]
        drifts = {self.planner.drift(rate, overhead_s) for rate in rates}
        if drifts in ({1}, {-1}):
            step_s = sum(t for t, _ in self._recent) / sum(n for _, n in self._recent)
            self._apply(step, now, step_s, overhead_s)

    def _apply(self, step, now, step_s, overhead_s):
        plan = self.planner.make_plan(
            step, now - self.start_time, step_s, overhead_s, self._startup_s, now
        )
        # The first plan replaces the provisional warmup; a re-plan keeps its slope.
        self.schedule.replan(step, plan.steps, plan.warmup_steps, keep_slope=plan.replans > 0)
        state = self.schedule.state()
        plan = dataclasses.replace(plan, warmup_steps=int(state["warmup"]), schedule=state)
        self.planner.plan = plan
        self.stopper.total_steps = plan.steps
        self._since = (now, step)
        self._stepping_since_plan = 0.0
        logging.info("%s", plan.line())
        self.on_plan(plan)


class CollapseWarning(keras.callbacks.Callback):
    """One warning when `proj_std` (models/representation_health.py) stays below
    `threshold` of the healthy 1/sqrt(d) for `patience` steps in a row: the encoder is
    mapping images to ever fewer directions, whatever the loss says."""

    def __init__(self, dim, threshold=0.2, patience=500):
        super().__init__()
        self.healthy = representation_health.healthy_std(dim)
        self.threshold, self.patience = threshold, patience
        self.low_since = None  # the first step of the current run of low values
        self.warned = False

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("proj_std")
        if value is None or self.warned:
            return
        step = int(self.model.optimizer.iterations.numpy())
        ratio = float(value) / self.healthy
        if ratio >= self.threshold:
            self.low_since = None
            return
        self.low_since = step if self.low_since is None else self.low_since
        if step - self.low_since >= self.patience:
            self.warned = True
            logging.warning(
                "The representation looks collapsed: proj_std has been %.3f of a healthy "
                "spread (1/sqrt(d)) since step %d, and effective_rank is %.1f. See "
                "README, Reading the curves.",
                ratio,
                self.low_since,
                float((logs or {}).get("effective_rank", float("nan"))),
            )
