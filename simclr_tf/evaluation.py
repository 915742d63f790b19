"""Evaluation on a finite labelled dataset: classifier accuracy and weighted kNN.

Both run the model in inference mode batch by batch outside `fit`, so they behave the
same under every strategy (Keras' `evaluate` fails under multi-worker in Keras 3.15).

kNN is the usual self-supervised monitor:
Cosine similarity, the k nearest bank features vote for their class with weight
exp(similarity / temperature) (Wu et al., 2018), k = 200 and temperature 0.1 by default.
"""

import numpy as np
import tensorflow as tf


def extract_features(encoder, dataset):
    """L2-normalised representations and labels of a finite dataset of {image, label}."""

    @tf.function
    def features(images):
        h = encoder(images, training=False)["final_avg_pool"]
        return tf.math.l2_normalize(tf.cast(h, tf.float32), axis=-1)

    feats, labels = [], []
    for batch in dataset:
        feats.append(features(batch["image"]).numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(feats), np.concatenate(labels)


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


def knn_accuracy(encoder, bank_dataset, query_dataset, num_classes, k=200, temperature=0.1):
    bank, bank_labels = extract_features(encoder, bank_dataset)
    queries, labels = extract_features(encoder, query_dataset)
    predicted = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return float(np.mean(predicted == labels))


def classification_metrics(model, dataset, logits_key="logits"):
    """Accuracy and mean cross-entropy of `model(images)[logits_key]` on labelled examples."""

    @tf.function
    def logits_of(images):
        return tf.cast(model(images, training=False)[logits_key], tf.float32)

    correct = total = 0
    loss_sum = 0.0
    for batch in dataset:
        labels = batch["label"].numpy()
        keep = labels >= 0
        logits = logits_of(batch["image"]).numpy()[keep]
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
