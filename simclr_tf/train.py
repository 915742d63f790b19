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
    evaluation,
    hardware,
    run_dirs,
    training_loop,
)
from simclr_tf.config import Config, ConfigError
from simclr_tf.data import DataError, open_source, pipeline, subsets
from simclr_tf.models import builders, step_models
from simclr_tf.training_loop import TrainingError  # noqa: F401  (raised by run)


def _classifier_model(config: Config, source, fresh_encoder):
    model = builders.classifier_model(config, source.num_classes)
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


def _eval_results(model, config, source):
    d = config.data
    if not source.labeled or d.eval_split is None:
        return {}
    source.check_split(d.eval_split)
    subset = subsets.sample_ids(
        source, d.eval_split, config.run.eval_steps * d.eval_batch_size, d.seed, "Evaluation"
    )
    dataset = pipeline.eval_dataset(source, d.eval_split, d, d.eval_batch_size, subset=subset)
    if isinstance(model, step_models.PretrainModel):
        if model.probe is None:
            return {}
        metrics = evaluation.classification_metrics(model, dataset, "probe_logits")
        return {"eval_probe_acc": metrics["accuracy"], "eval_probe_loss": metrics["loss"]}
    metrics = evaluation.classification_metrics(model, dataset)
    return {
        "eval_accuracy": metrics["accuracy"],
        "eval_loss": metrics["loss"],
        "eval_examples": metrics["examples"],
    }


def knn_datasets(config, source):
    d = config.data
    bank_ids = subsets.sample_ids(
        source, d.train_split, config.run.knn_bank_size, d.seed, "kNN bank"
    )
    query_ids = subsets.sample_ids(
        source, d.eval_split, config.run.eval_steps * d.eval_batch_size, d.seed, "kNN queries"
    )
    bank = functools.partial(
        pipeline.eval_dataset, source, d.train_split, d, d.eval_batch_size, subset=bank_ids
    )
    query = functools.partial(
        pipeline.eval_dataset, source, d.eval_split, d, d.eval_batch_size, subset=query_ids
    )
    return bank, query


def pretrain(config: Config, strategy, source, extra_callbacks=()):
    d = config.data
    num_train = source.num_examples(d.train_split)
    total = training_loop.steps_for(config, num_train)
    steps_per_epoch = num_train / d.batch_size
    with strategy.scope():
        num_classes = source.num_classes if config.model.linear_probe else 0
        model = builders.pretrain_model(config, num_classes)
        model = training_loop.compile_for_run(model, config, total, steps_per_epoch)

    def dataset_fn(ctx):
        return pipeline.pretrain_dataset(
            source,
            d.train_split,
            d,
            config.augment,
            ctx.get_per_replica_batch_size(d.batch_size),
            ctx,
        )

    extra, monitor = list(extra_callbacks), None
    if source.skipped is not None:
        extra.append(callbacks.SkippedImages(source.skipped))
    if source.labeled and d.eval_split in source.split_sizes:
        bank, query = knn_datasets(config, source)
        loop = min(config.run.checkpoint_steps, total)
        # In fit epochs (checkpoint loops); 0 means only the final evaluation below.
        every = config.run.knn_every_epochs * steps_per_epoch / loop
        monitor = callbacks.KnnMonitor(
            bank, query, source.num_classes, every, config.run.knn_k, config.run.knn_temperature
        )
        extra.insert(0, monitor)
    step = training_loop.fit_to_step(model, config, strategy, dataset_fn, total, extra)
    results = {"global_step": step, "train_examples": num_train}
    if monitor is not None:
        results["knn_acc"] = monitor.evaluate()
        results.update(_eval_results(model, config, source))
    return model, results


def classify(config: Config, strategy, source, extra_callbacks=(), fresh_encoder=False):
    d, mode = config.data, config.run.mode
    if not source.labeled:
        raise DataError(f"--mode={mode} needs labels, but {source.name} has none")
    subset = subsets.label_subset(config, source, distributed.is_chief(strategy))
    num_train = source.num_examples(d.train_split) if subset is None else len(subset)
    total = training_loop.steps_for(config, num_train)
    with strategy.scope():
        model = _classifier_model(config, source, fresh_encoder)
        model = training_loop.compile_for_run(model, config, total, num_train / d.batch_size)

    def dataset_fn(ctx):
        return pipeline.classifier_train_dataset(
            source, d.train_split, d, ctx.get_per_replica_batch_size(d.batch_size), ctx, subset
        )

    extra = list(extra_callbacks)
    if source.skipped is not None:
        extra.append(callbacks.SkippedImages(source.skipped))
    step = training_loop.fit_to_step(model, config, strategy, dataset_fn, total, extra)
    results = {"global_step": step, "train_examples": num_train}
    results.update(_eval_results(model, config, source))
    return model, results


def evaluate(config: Config, strategy, source):
    """Evaluates the classifier checkpoint in model_dir on the eval split."""
    with strategy.scope():
        model = _classifier_model(config, source, fresh_encoder=True)
    path = checkpoints.restore_model(model, config.run.model_dir)
    return model, {"checkpoint": path, **_eval_results(model, config, source)}


def setup(config: Config):
    """Precision policy, strategy and data source, in the order TF needs them."""
    r = config.run
    if r.num_logical_devices > 1:
        distributed.split_cpu(r.num_logical_devices)
    keras.mixed_precision.set_global_policy(r.precision)
    # Multi-worker collectives must be configured before other TF work, so the
    # strategy comes first; the source is opened outside its scope, so its counters
    # are plain host variables.
    strategy = distributed.make_strategy(r.strategy, r.tpu, r.num_logical_devices)
    # Weight initialisation follows the seed too, so two runs that differ only in one
    # setting (precision, say) start from the same weights and compare pair by pair.
    keras.utils.set_random_seed(config.data.seed)
    if config.data.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"batch_size {config.data.batch_size} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    source = open_source(
        config.data.dataset, config.data.data_dir, strict=config.data.strict_decoding
    )
    check_splits(config, source)
    return strategy, source


def check_splits(config: Config, source):
    """Every split the run will read exists, before any training: a labelled source is
    evaluated on `eval_split` in every mode, so a missing one stops every mode alike."""
    d = config.data
    source.check_split(d.train_split)
    if source.labeled and d.eval_split is not None and d.eval_split not in source.split_sizes:
        raise DataError(
            f"{source.name}: no eval split {d.eval_split!r} (available: "
            f"{', '.join(sorted(source.split_sizes))}); pass --eval_split=NAME, or "
            "--eval_split= to train without evaluation"
        )


def for_hardware(config: Config, hw=None):
    """The config with `--precision=auto` and the CPU speed rules resolved for `hw`
    (default: this machine), and the record of what was chosen and why."""
    hw = hardware.detect(config.run.strategy) if hw is None else hw
    resolved = hardware.resolve(config.run.precision, config.model.matmul_kernel_grad, hw)
    config = dataclasses.replace(
        config,
        run=dataclasses.replace(config.run, precision=resolved["precision"]),
        model=dataclasses.replace(config.model, matmul_kernel_grad=resolved["matmul_kernel_grad"]),
    )
    return config, resolved


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
    config, resolved = for_hardware(config)
    logging.info("Precision %s (%s)", resolved["precision"], resolved["precision_reason"])
    strategy, source = setup(config)
    r = config.run
    chief = distributed.is_chief(strategy)
    if chief:
        tf.io.gfile.makedirs(r.model_dir)
        # As asked (so a rerun on other hardware resolves afresh), plus what was used.
        run_dirs.write_json_atomic(
            os.path.join(r.model_dir, run_dirs.CONFIG_FILE), {**requested, "resolved": resolved}
        )
    logging.info("%s on %s with %d replica(s)", r.mode, source.name, strategy.num_replicas_in_sync)
    if r.mode == "pretrain":
        model, results = pretrain(config, strategy, source, extra_callbacks)
    elif r.mode in ("linear_eval", "finetune"):
        model, results = classify(
            config, strategy, source, extra_callbacks, fresh_encoder=not r.init_checkpoint
        )
    elif r.mode == "supervised":
        model, results = classify(config, strategy, source, extra_callbacks, fresh_encoder=True)
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
