"""The fit loop of every training job: the optimizer and schedule a run compiles with,
and `fit` in checkpoint-sized loops until exactly the requested step.

A rerun resumes at the last checkpoint (optimizer state and step included); a loss or
weights gone non-finite stop the run without saving over good checkpoints; batches
that float16 loss scaling skipped are made up for.
"""

import dataclasses
import math
import os

import tensorflow as tf
from absl import logging

from simclr_tf import callbacks, checkpoints, distributed, keras_compat, preemption, time_budget
from simclr_tf.config import Config
from simclr_tf.optim import optimizers, schedules

SUMMARY_DIR = "logs"
MAX_SKIPPED_STEPS = 1000  # float16 batches with non-finite gradients before giving up


class TrainingError(RuntimeError):
    """Training cannot go on (diverged); one line naming the step and the checkpoint
    to resume or inspect from."""


def compile_for_run(model, config: Config, total_steps, steps_per_epoch):
    o = config.optim
    peak = schedules.scaled_learning_rate(o.learning_rate, config.data.batch_size, o.lr_scaling)
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        logging.warning(
            "Warmup (%d steps) is not shorter than the run (%d steps): the "
            "learning rate never starts its cosine decay",
            warmup,
            total_steps,
        )
    if config.run.time_budget:
        # Its length is planned once the run has timed its first steps (time_budget.py).
        schedule = schedules.PlannedWarmupCosine(peak, warmup, total_steps)
    else:
        schedule = schedules.warmup_cosine(peak, warmup, total_steps)
    optimizer = optimizers.build_optimizer(
        o.optimizer, schedule, o.momentum, o.weight_decay, o.weight_decay_mode
    )
    model.compile(optimizer=optimizer, jit_compile=config.run.jit_compile)
    model.lr_schedule = schedule
    optimizer.build(model.trainable_variables)
    return model


# The length a budgeted run starts with, until its plan replaces it: in whole checkpoint
# loops, longer than any budget will allow.
PROVISIONAL_LOOPS = 10**6


def steps_for(config: Config, num_examples):
    if config.run.time_budget:
        return config.run.checkpoint_steps * PROVISIONAL_LOOPS
    if config.run.train_steps > 0:
        return config.run.train_steps
    return max(1, math.ceil(config.run.train_epochs * num_examples / config.data.batch_size))


def steps_per_execution_for(requested, strategy, start_step, total_steps, loop):
    """Steps per compiled call: `requested` (0: 32 on TPU, where each host round trip
    costs a step's worth of time, else 1; on a CPU the host keeps up), lowered to the
    largest count that divides the checkpoint loop, the run's length and the step it
    resumes from, so every save and the stop fall on a call's end."""
    if requested == 0:
        requested = 32 if isinstance(strategy, tf.distribute.TPUStrategy) else 1
    aligned = math.gcd(loop, total_steps, start_step) if start_step else math.gcd(loop, total_steps)
    return max(d for d in range(1, requested + 1) if aligned % d == 0)


def _replayed_dataset(strategy, dataset_fn, step):
    """The distributed training data from `step` on: a pipeline feeding several
    replicas has given each step one batch per replica."""

    def from_step(ctx):
        per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        return dataset_fn(ctx, step * per_step)

    return strategy.distribute_datasets_from_function(from_step)


def fit_to_step(
    model, config, strategy, dataset_fn, total_steps, extra_callbacks, budget=None, start_time=None
):
    """Trains until `total_steps` applied updates, resuming from `model_dir`'s latest
    checkpoint; `dataset_fn(input_context, skip_batches)` builds each input pipeline.
    With `budget` (a `time_budget.Workload`), the run plans its own length instead
    (a resumed run keeps the plan it made)."""
    r = config.run
    chief = distributed.is_chief(strategy)
    worker_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0) or 0
    manager = checkpoints.CheckpointManager(
        checkpoints.checkpoint_items(model), r.model_dir, r.keep_checkpoints, chief, worker_id
    )
    manager.restore_latest()
    step = int(model.optimizer.iterations.numpy())
    stopper = callbacks.StopAtStep(total_steps)
    plan = time_budget.read_plan(r.model_dir) if budget is not None else None
    if plan is not None:
        model.lr_schedule.restore(plan.schedule)
        total_steps = stopper.total_steps = plan.steps
        budget = None
        logging.info("Resuming the budgeted run's plan: %s", plan.line())
    loop = min(r.checkpoint_steps, total_steps)
    if step >= total_steps:
        logging.info("Already at step %d of %d; nothing to train", step, total_steps)
        return step
    model.steps_per_execution = steps_per_execution_for(
        r.steps_per_execution, strategy, step, total_steps, loop
    )
    if r.steps_per_execution > 1 and model.steps_per_execution != r.steps_per_execution:
        logging.warning(
            "steps_per_execution %d lowered to %d to divide the checkpoint loop (%d), "
            "the run (%d) and the step it resumes from (%d)",
            r.steps_per_execution,
            model.steps_per_execution,
            loop,
            total_steps,
            step,
        )
    logging.info(
        "Training steps %d..%d in %d-step loops, %d step(s) per execution",
        step,
        total_steps,
        loop,
        model.steps_per_execution,
    )
    budget_callbacks = []
    if budget is not None:
        planner = time_budget.Planner(
            dataclasses.replace(budget, steps_per_execution=model.steps_per_execution)
        )
        budget_callbacks.append(
            callbacks.BudgetCallback(
                planner,
                model.lr_schedule,
                stopper,
                start_time,
                on_plan=lambda p: time_budget.write_plan(r.model_dir, p) if chief else None,
            )
        )
    diverged = callbacks.NonFiniteLoss()
    saver = callbacks.SaveCheckpoint(manager, guard=diverged)
    # The budget's drift check runs after the save and the monitor it must account for.
    cbs = list(extra_callbacks) + [diverged, stopper, saver] + budget_callbacks
    if chief:
        cbs.append(
            keras_compat.ResumableTensorBoard(
                os.path.join(r.model_dir, SUMMARY_DIR), update_freq=r.summary_steps
            )
        )
    with preemption.saving_on_preemption(strategy, saver.save_now, r.model_dir) as saving:
        return _fit_loop(model, strategy, dataset_fn, step, total_steps, loop, cbs + saving)


def _fit_loop(model, strategy, dataset_fn, step, total_steps, loop, cbs):
    """`fit` until the stopper's step (a budgeted run's plan may change it)."""
    chief = distributed.is_chief(strategy)
    diverged = next(c for c in cbs if isinstance(c, callbacks.NonFiniteLoss))
    stopper = next(c for c in cbs if isinstance(c, callbacks.StopAtStep))
    saver = next(c for c in cbs if isinstance(c, callbacks.SaveCheckpoint))
    epochs = math.ceil(total_steps / loop)
    while True:
        model.fit(
            _replayed_dataset(strategy, dataset_fn, step),
            epochs=epochs,
            steps_per_epoch=loop,
            initial_epoch=step // loop,
            callbacks=cbs,
            verbose="auto" if chief else 0,
            shuffle=False,
        )
        step = int(model.optimizer.iterations.numpy())
        total_steps = stopper.total_steps
        last_good = saver.manager.latest or "none (no checkpoint was saved)"
        if diverged.step is not None:
            raise TrainingError(
                f"the loss or the weights became NaN or infinite at step "
                f"{diverged.step}; last good checkpoint: {last_good}"
            )
        if step >= total_steps:
            return step
        # Batches skipped by float16 loss scaling did not count: train a little longer.
        if stopper.skipped > MAX_SKIPPED_STEPS:
            raise TrainingError(
                f"{stopper.skipped} batches had non-finite gradients by "
                f"step {step} (float16 loss scaling gave up); last good "
                f"checkpoint: {last_good}"
            )
        epochs = step // loop + math.ceil((total_steps - step) / loop)
