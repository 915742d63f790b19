"""Evaluation: weighted kNN and classifier metrics against direct numpy implementations."""

import numpy as np
import pytest

from simclr_tf import evaluation

from conftest import cpu_devices


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_knn(bank, bank_labels, queries, num_classes, k, temperature):
    predictions = []
    for q in queries:
        sims = bank @ q
        top = np.argsort(-sims)[:k]
        votes = np.zeros(num_classes)
        for i in top:
            votes[bank_labels[i]] += np.exp(sims[i] / temperature)
        predictions.append(np.argmax(votes))
    return np.array(predictions)


def test_knn_matches_numpy():
    rng = np.random.default_rng(0)
    bank = _normalize(rng.normal(size=(300, 8))).astype(np.float32)
    labels = rng.integers(0, 5, 300)
    queries = _normalize(rng.normal(size=(50, 8))).astype(np.float32)
    predicted = evaluation.knn_predict(bank, labels, queries, 5, k=20, temperature=0.1, chunk=16)
    np.testing.assert_array_equal(predicted, numpy_knn(bank, labels, queries, 5, 20, 0.1))


def test_knn_separates_clusters_and_caps_k():
    rng = np.random.default_rng(1)
    centers = _normalize(rng.normal(size=(3, 16)))
    labels = np.repeat(np.arange(3), 20)
    bank = _normalize(centers[labels] + 0.05 * rng.normal(size=(60, 16))).astype(np.float32)
    queries = _normalize(centers + 0.05 * rng.normal(size=(3, 16))).astype(np.float32)
    # k larger than the bank is capped; the temperature-weighted vote still wins.
    assert evaluation.knn_predict(bank, labels, queries, 3, k=200).tolist() == [0, 1, 2]


def test_classification_metrics_match_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    images = rng.normal(size=(10, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, -1, 1, 0, 2, 2, 1, 0])

    def model(x, training=False):
        return {"logits": tf.matmul(x, kernel)}

    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(4)
    metrics = evaluation.classification_metrics(model, dataset)
    logits, valid = images @ kernel, labels >= 0
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert metrics["examples"] == 9
    assert metrics["accuracy"] == np.mean(logits[valid].argmax(1) == labels[valid])
    assert np.isclose(metrics["loss"], -np.mean(log_p[valid, labels[valid]]), rtol=1e-5)


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicated_evaluation_sees_every_example_once(replicas):
    """Split across replicas (10 examples in batches of 4: the last global batch of 2
    leaves a third replica empty), the metrics and features are the single-device ones."""
    import tensorflow as tf

    from simclr_tf import keras_compat

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    images = rng.normal(size=(10, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, -1, 1, 0, 2, 2, 1, 0])
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(4)

    def model(x, training=False):
        return {"logits": tf.matmul(x, kernel), "final_avg_pool": tf.matmul(x, kernel)}

    strategy = keras_compat.mirrored_strategy(cpu_devices(replicas))
    plain = evaluation.classification_metrics(model, dataset)
    spread = evaluation.classification_metrics(model, dataset, strategy=strategy)
    assert spread["examples"] == plain["examples"] == 9
    assert spread["accuracy"] == plain["accuracy"]
    assert np.isclose(spread["loss"], plain["loss"], rtol=1e-6)
    features, feature_labels = evaluation.extract_features(model, dataset, strategy)
    expected = images @ kernel
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    order = np.lexsort(features.T)  # the same rows, whatever order replicas return them in
    np.testing.assert_allclose(features[order], expected[np.lexsort(expected.T)], rtol=1e-5)
    assert sorted(feature_labels.tolist()) == sorted(labels.tolist())


def test_replicated_features_of_a_conv_encoder_with_a_one_image_last_batch():
    """A last global batch of one image over two replicas: padded, not left empty (an
    empty batch fails in TensorFlow's CPU convolution)."""
    import keras
    import tensorflow as tf

    from simclr_tf import keras_compat

    rng = np.random.default_rng(4)
    images = rng.random((5, 8, 8, 3)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(5)}).batch(4)
    strategy = keras_compat.mirrored_strategy(cpu_devices(2))
    with strategy.scope():
        conv = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.GlobalAveragePooling2D(),
            ]
        )

    def encoder(x, training=False):
        return {"final_avg_pool": conv(x, training=training)}

    plain, plain_labels = evaluation.extract_features(encoder, dataset)
    spread, labels = evaluation.extract_features(encoder, dataset, strategy)
    assert len(spread) == 5 and sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(
        spread[np.argsort(labels)], plain[np.argsort(plain_labels)], rtol=1e-5
    )
