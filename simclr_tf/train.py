"""Runs one job from a `Config`: pretrain, linear_eval, finetune, supervised or eval.

Everything that creates variables is built inside `strategy.scope()`; training data is
fed with `distribute_datasets_from_function`. Results are written to
`model_dir/results.json` atomically; the resolved config to `model_dir/config.json`.
"""

import dataclasses
import functools
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from simclr_tf import (
    callbacks,
    checkpoints,
    distributed,
    job_evaluation,
    run_dirs,
    run_lock,
    run_setup,
    teacher,
    time_budget,
    training_loop,
    view_grid,
)
from simclr_tf.config import Config, ConfigError
from simclr_tf.data import DataError, pipeline, subsets
from simclr_tf.models import builders, resnet
from simclr_tf.training_loop import TrainingError  # noqa: F401  (raised by run)


def _classifier_model(config: Config, num_classes, fresh_encoder, build=builders.classifier_model):
    model = build(config, num_classes)
    if not fresh_encoder and config.run.init_checkpoint:
        parts = {"encoder": model.encoder}
        if model.projection_head is not None:
            parts["projection_head"] = model.projection_head
        try:
            path = checkpoints.restore_parts(parts, config.run.init_checkpoint)
        except checkpoints.CheckpointMismatch as error:
            differs = run_dirs.architecture_differences(config.model, config.run.init_checkpoint)
            raise ConfigError(
                f"--init_checkpoint {config.run.init_checkpoint} is another "
                f"architecture ({differs})"
                if differs
                else str(error)
            ) from None
        logging.info("Initialised %s from %s", sorted(parts), path)
    return model


def _with_saved_model(config):
    """`--mode=eval`: the architecture (and input size) come from the run's own
    config.json, so model flags need not be repeated; data flags still choose what to
    evaluate on."""
    saved = run_dirs.required_config(config.run.model_dir)
    if saved.run.mode == "pretrain":
        raise ConfigError(
            f"{config.run.model_dir} is a pretraining run; --mode=eval "
            "evaluates linear_eval, finetune or supervised runs (the "
            "pretraining's kNN and probe accuracies are in its results.json)"
        )
    return dataclasses.replace(
        config,
        model=saved.model,
        data=dataclasses.replace(config.data, image_size=saved.data.image_size),
    )


# --- The job ------------------------------------------------------------------------


def _projection_dim(config):
    """The width of z: the head's output, or h's without a head."""
    m = config.model
    if m.proj_head_mode != "none":
        return m.proj_out_dim
    return resnet.representation_dim(m.depth, m.width_multiplier)


def pretrain(config: Config, strategy, source, extra_callbacks=(), start_time=None):
    d = config.data
    num_train = source.num_examples(d.train_split)
    total = training_loop.steps_for(config, num_train)
    steps_per_epoch = num_train / d.batch_size
    with strategy.scope():
        num_classes = source.num_classes if config.model.linear_probe else 0
        model = builders.pretrain_model(config, num_classes)
        model = training_loop.compile_for_run(model, config, total, steps_per_epoch)

    def dataset_fn(ctx, skip_batches):
        return pipeline.pretrain_dataset(
            source,
            d.train_split,
            d,
            config.augment,
            ctx.get_per_replica_batch_size(d.batch_size),
            ctx,
            skip_batches,
        )

    if distributed.is_chief(strategy) and tf.train.latest_checkpoint(config.run.model_dir) is None:
        _write_view_summary(config, source)
    extra, monitor = list(extra_callbacks), None
    extra.append(callbacks.CollapseWarning(_projection_dim(config)))
    if source.skipped is not None:
        extra.append(callbacks.SkippedImages(source.skipped))
    if source.labeled and d.eval_split in source.split_sizes:
        bank, query = job_evaluation.knn_datasets(config, source)
        loop = min(config.run.checkpoint_steps, total)
        # In fit epochs (checkpoint loops); 0 means only the final evaluation below.
        every = config.run.knn_every_epochs * steps_per_epoch / loop
        monitor = callbacks.KnnMonitor(
            bank, query, source.num_classes, every, config.run.knn_k, config.run.knn_temperature
        )
        extra.insert(0, monitor)
    budget = time_budget.pretrain_workload(
        config,
        steps_per_epoch,
        job_evaluation.eval_examples(config, source),
        min(config.run.knn_bank_size, num_train) if monitor is not None else 0,
        monitor.every_epochs if monitor is not None else 0,
    )
    step = training_loop.fit_to_step(
        model, config, strategy, dataset_fn, total, extra, budget, start_time
    )
    results = {"global_step": step, "train_examples": num_train}
    if monitor is not None:
        results["knn_acc"] = monitor.evaluate()
        results.update(job_evaluation.eval_results(model, config, source, strategy))
    return model, results


def _write_view_summary(config, source, pairs=16):
    """The first views a run trains on, once, at its start (TensorBoard: `views`)."""
    d = dataclasses.replace(config.data, shuffle_buffer=pairs, cache=False)
    batch = next(iter(pipeline.pretrain_dataset(source, d.train_split, d, config.augment, pairs)))
    log_dir = os.path.join(config.run.model_dir, training_loop.SUMMARY_DIR, "train")
    view_grid.write_summary(log_dir, batch["view1"], batch["view2"], step=0)


def classify(
    config: Config, strategy, source, extra_callbacks=(), fresh_encoder=False, start_time=None
):
    d, mode = config.data, config.run.mode
    if not source.labeled:
        raise DataError(f"--mode={mode} needs labels, but {source.name} has none")
    subset = subsets.label_subset(config, source, distributed.is_chief(strategy))
    num_train = source.num_examples(d.train_split) if subset is None else len(subset)
    total = training_loop.steps_for(config, num_train)
    with strategy.scope():
        model = _classifier_model(config, source.num_classes, fresh_encoder)
        model = training_loop.compile_for_run(model, config, total, num_train / d.batch_size)

    def dataset_fn(ctx, skip_batches):
        return pipeline.classifier_train_dataset(
            source,
            d.train_split,
            d,
            ctx.get_per_replica_batch_size(d.batch_size),
            ctx,
            subset,
            skip_batches,
        )

    extra = list(extra_callbacks)
    if source.skipped is not None:
        extra.append(callbacks.SkippedImages(source.skipped))
    budget = time_budget.workload(
        config, 1, job_evaluation.eval_examples(config, source), num_train / d.batch_size
    )
    step = training_loop.fit_to_step(
        model, config, strategy, dataset_fn, total, extra, budget, start_time
    )
    results = {"global_step": step, "train_examples": num_train}
    results.update(job_evaluation.eval_results(model, config, source, strategy))
    return model, results


def distill(config: Config, strategy, source, extra_callbacks=(), start_time=None):
    """SimCLRv2's distillation: a frozen teacher labels every image of the train split
    on the fly; the student learns its tempered predictions (plus, with
    `distill_label_weight` > 0, the labels of the labelled subset)."""
    d, k = config.data, config.distill
    read_labels = k.distill_label_weight > 0
    if read_labels and not source.labeled:
        raise DataError(
            f"--distill_label_weight > 0 needs labels, but {source.name} has "
            "none (set it to 0 to distil from unlabeled images only)"
        )
    labelled = (
        subsets.label_subset(config, source, distributed.is_chief(strategy))
        if read_labels
        else None
    )
    num_train = source.num_examples(d.train_split)
    total = training_loop.steps_for(config, num_train)
    with strategy.scope():
        teacher_logits, classes = teacher.load_teacher(k.teacher, d.image_size)
        if source.labeled and source.num_classes != classes:
            raise ConfigError(
                f"--teacher {k.teacher} predicts {classes} classes, "
                f"{source.name} has {source.num_classes}"
            )
        build = functools.partial(builders.distillation_model, teacher=teacher_logits)
        model = _classifier_model(config, classes, not config.run.init_checkpoint, build)
        model = training_loop.compile_for_run(model, config, total, num_train / d.batch_size)

    def dataset_fn(ctx, skip_batches):
        return pipeline.distill_dataset(
            source,
            d.train_split,
            d,
            ctx.get_per_replica_batch_size(d.batch_size),
            ctx,
            labelled,
            read_labels,
            skip_batches,
        )

    extra = list(extra_callbacks)
    if source.skipped is not None:
        extra.append(callbacks.SkippedImages(source.skipped))
    budget = time_budget.workload(
        config, 1, job_evaluation.eval_examples(config, source), num_train / d.batch_size
    )
    step = training_loop.fit_to_step(
        model, config, strategy, dataset_fn, total, extra, budget, start_time
    )
    results = {
        "global_step": step,
        "train_examples": num_train,
        "teacher": k.teacher,
        "labelled_examples": (
            0 if not read_labels else num_train if labelled is None else len(labelled)
        ),
    }
    results.update(job_evaluation.eval_results(model, config, source, strategy))
    if "eval_accuracy" in results:  # the teacher on the same examples, for comparison
        results["teacher_eval_accuracy"] = job_evaluation.eval_results(
            _LogitsModel(teacher_logits), config, source
        )["eval_accuracy"]
    return model, results


class _LogitsModel:
    """A logits function in the shape `evaluation.classification_metrics` reads."""

    def __init__(self, logits_fn):
        self.logits_fn = logits_fn

    def __call__(self, images, training=False):
        return {"logits": self.logits_fn(images)}


def evaluate(config: Config, strategy, source):
    """Evaluates the classifier checkpoint in model_dir on the eval split."""
    with strategy.scope():
        model = _classifier_model(config, source.num_classes, fresh_encoder=True)
    path = checkpoints.restore_model(model, config.run.model_dir)
    return model, {
        "checkpoint": path,
        **job_evaluation.eval_results(model, config, source, strategy),
    }


def run(config: Config, extra_callbacks=()):
    """One job, as `python -m simclr_tf.main` runs it: pretrain, linear_eval, finetune,
    supervised or eval, resuming from the last checkpoint in `config.run.model_dir`.

    Args:
      config: the run's `Config` (`config.run.mode` chooses the job).
      extra_callbacks: Keras callbacks added to `fit` (e.g. a timer).

    Returns:
      (model, results): the trained Keras model and the dict also written to
      `model_dir/results.json` (step, accuracies, wall time). The global Keras
      precision policy is restored on return.

    Raises:
      ConfigError, DataError: bad settings or data, before training starts.
      TrainingError: the loss or the weights became non-finite.
    """
    policy = keras.mixed_precision.global_policy()
    try:
        return _run(config, extra_callbacks)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _run(config: Config, extra_callbacks):
    start = time.time()
    if config.run.mode == "eval":
        config = _with_saved_model(config)
    requested = json.loads(config.to_json())
    config, resolved = run_setup.for_hardware(config)
    logging.info("Precision %s (%s)", resolved["precision"], resolved["precision_reason"])
    strategy, source = run_setup.setup(config)
    r = config.run
    chief = distributed.is_chief(strategy)
    if chief:
        tf.io.gfile.makedirs(r.model_dir)
    with run_lock.holding(r.model_dir, enabled=chief):
        if chief:
            # As asked (so a rerun on other hardware resolves afresh), plus what was used.
            run_dirs.write_json_atomic(
                os.path.join(r.model_dir, run_dirs.CONFIG_FILE),
                {**requested, "resolved": resolved},
            )
        return _run_mode(config, strategy, source, extra_callbacks, start)


def _run_mode(config: Config, strategy, source, extra_callbacks, start):
    r = config.run
    chief = distributed.is_chief(strategy)
    logging.info("%s on %s with %d replica(s)", r.mode, source.name, strategy.num_replicas_in_sync)
    if r.mode == "pretrain":
        model, results = pretrain(config, strategy, source, extra_callbacks, start)
    elif r.mode in ("linear_eval", "finetune"):
        model, results = classify(
            config, strategy, source, extra_callbacks, not r.init_checkpoint, start
        )
    elif r.mode == "distill":
        model, results = distill(config, strategy, source, extra_callbacks, start)
    elif r.mode == "supervised":
        model, results = classify(config, strategy, source, extra_callbacks, True, start)
    elif r.mode == "eval":
        model, results = evaluate(config, strategy, source)
    else:
        raise ValueError(f"train.run does not handle mode {r.mode!r}")
    results.update(mode=r.mode, dataset=source.name, wall_time_s=round(time.time() - start, 1))
    if source.skipped is not None:
        results["skipped_images"] = source.skipped.value
    if chief:
        run_dirs.write_json_atomic(os.path.join(r.model_dir, "results.json"), results)
    return model, results
