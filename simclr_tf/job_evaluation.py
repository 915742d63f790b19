"""The evaluations a training job runs on its eval split: the kNN monitor's data and
the accuracy after training (a pretraining run's probe, or a classifier's)."""

import functools

from simclr_tf import evaluation
from simclr_tf.data import pipeline, subsets
from simclr_tf.models import step_models


def eval_results(model, config, source, strategy=None):
    """Accuracy on `eval_split`, computed across `strategy`'s replicas where given."""
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
        metrics = evaluation.classification_metrics(model, dataset, "probe_logits", strategy)
        return {"eval_probe_acc": metrics["accuracy"], "eval_probe_loss": metrics["loss"]}
    metrics = evaluation.classification_metrics(model, dataset, strategy=strategy)
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


def eval_examples(config, source):
    d = config.data
    if not source.labeled or d.eval_split not in source.split_sizes:
        return 0
    whole = source.num_examples(d.eval_split)
    return min(whole, config.run.eval_steps * d.eval_batch_size) if config.run.eval_steps else whole
