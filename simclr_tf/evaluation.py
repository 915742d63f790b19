"""Evaluation on a finite labelled dataset: classifier accuracy and weighted kNN.

Both run the model in inference mode batch by batch outside `fit` (Keras' `evaluate`
fails under multi-worker in Keras 3.15). Given the model's strategy, each global batch
is split across its replicas (every worker's) and the outputs are gathered back, so
every worker gets the same, complete result.

kNN is the usual self-supervised monitor:
Cosine similarity, the k nearest bank features vote for their class with weight
exp(similarity / temperature) (Wu et al., 2018), k = 200 and temperature 0.1 by default.
"""

import numpy as np
import tensorflow as tf


def _batches(fn, dataset, strategy):
    """`fn(batch)` (a dict of tensors, one row per example) for every batch of the
    finite `dataset` as numpy; under `strategy`, computed on every replica and gathered.

    Each global batch is padded to a multiple of the replica count first (the padding
    dropped after the gather): a short last batch would otherwise leave some replica
    an empty batch, which TensorFlow's CPU convolutions reject.
    """
    if strategy is None:
        step = tf.function(fn, reduce_retracing=True)
        for batch in dataset:
            yield {k: v.numpy() for k, v in step(batch).items()}
        return
    replicas = strategy.num_replicas_in_sync

    def padded(batch):
        size = tf.shape(next(iter(batch.values())))[0]
        pad = (replicas - size % replicas) % replicas
        out = {k: tf.pad(v, [[0, pad]] + [[0, 0]] * (v.shape.rank - 1)) for k, v in batch.items()}
        out["valid"] = tf.cast(tf.range(size + pad) < size, tf.int32)  # gather takes no bool
        return out

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(
        dataset.map(padded).with_options(options)
    )

    def with_mask(batch):
        return dict(fn(batch), valid=batch["valid"])

    @tf.function(reduce_retracing=True)
    def step(batch):
        out = strategy.run(with_mask, args=(batch,))
        return {k: strategy.gather(v, axis=0) for k, v in out.items()}

    for batch in distributed:
        out = {k: v.numpy() for k, v in step(batch).items()}
        keep = out.pop("valid").astype(bool)
        yield {k: v[keep] for k, v in out.items()}


def extract_features(encoder, dataset, strategy=None):
    """L2-normalised representations and labels of a finite dataset of {image, label}."""

    def features(batch):
        h = encoder(batch["image"], training=False)["final_avg_pool"]
        return {
            "features": tf.math.l2_normalize(tf.cast(h, tf.float32), axis=-1),
            "label": batch["label"],
        }

    outputs = list(_batches(features, dataset, strategy))
    return (
        np.concatenate([o["features"] for o in outputs]),
        np.concatenate([o["label"] for o in outputs]),
    )


def knn_predict(bank, bank_labels, queries, num_classes, k=200, temperature=0.1, chunk=1024):
    """Predicted class of each query (all inputs L2-normalised)."""
    bank = tf.constant(bank, tf.float32)
    one_hot_bank = tf.one_hot(tf.constant(bank_labels, tf.int32), num_classes)
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, len(queries), chunk):
        sims = tf.matmul(
            tf.constant(queries[start : start + chunk], tf.float32), bank, transpose_b=True
        )
        top_sims, top_idx = tf.math.top_k(sims, k=k)
        weights = tf.exp(top_sims / temperature)
        votes = tf.reduce_sum(tf.gather(one_hot_bank, top_idx) * weights[..., None], axis=1)
        predictions.append(tf.argmax(votes, axis=-1).numpy())
    return np.concatenate(predictions)


def knn_accuracy(
    encoder, bank_dataset, query_dataset, num_classes, k=200, temperature=0.1, strategy=None
):
    bank, bank_labels = extract_features(encoder, bank_dataset, strategy)
    queries, labels = extract_features(encoder, query_dataset, strategy)
    predicted = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return float(np.mean(predicted == labels))


def classification_metrics(model, dataset, logits_key="logits", strategy=None):
    """Accuracy and mean cross-entropy of `model(images)[logits_key]` on labelled examples."""

    def logits_of(batch):
        logits = model(batch["image"], training=False)[logits_key]
        return {"logits": tf.cast(logits, tf.float32), "label": batch["label"]}

    correct = total = 0
    loss_sum = 0.0
    for out in _batches(logits_of, dataset, strategy):
        labels = out["label"]
        keep = labels >= 0
        logits = out["logits"][keep]
        labels = labels[keep]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-log_probs[np.arange(len(labels)), labels].sum())
        correct += int((logits.argmax(axis=1) == labels).sum())
        total += len(labels)
    return {
        "accuracy": correct / max(total, 1),
        "loss": loss_sum / max(total, 1),
        "examples": total,
    }
