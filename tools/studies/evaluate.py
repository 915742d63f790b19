"""The one protocol every study run is measured by: frozen features of the whole
training split (bank / linear training set) and test split, read at h (the encoder's
pooled output) and at z (the projection head's output), each scored by kNN (k 200,
cosine, temperature 0.1, as the training monitor) and by a linear probe."""

import dataclasses

import numpy as np

KNN_K, KNN_TEMPERATURE = 200, 0.1


@dataclasses.dataclass
class Split:
    images: np.ndarray  # uint8 [N, S, S, 3], the eval view
    labels: np.ndarray  # int64 [N]


def load_split(source, split, image_size, batch_size=1000):
    """Every example of `split` in the eval preprocessing, once (shared by all runs)."""
    from simclr_tf.config import DataConfig
    from simclr_tf.data import pipeline

    source.check_split(split)
    data = DataConfig(image_size=image_size, deterministic=True)
    images, labels = [], []
    for batch in pipeline.eval_dataset(source, split, data, batch_size):
        images.append(np.round(batch["image"].numpy() * 255).astype(np.uint8))
        labels.append(batch["label"].numpy())
    return Split(np.concatenate(images), np.concatenate(labels))


def _encoder_and_head(config):
    import keras
    import tensorflow as tf

    from simclr_tf.models import builders

    keras.mixed_precision.set_global_policy("float32")
    encoder = builders.build_encoder(config)
    head = builders.build_projection_head(config)
    size = config.data.image_size
    head(encoder(tf.zeros([1, size, size, 3]), training=False)["final_avg_pool"])
    return encoder, head


def features_of(encoder, head, splits, with_z, batch_size=500):
    """{"h": [features per split], "z": [...]} in float32 (the same arithmetic for runs
    trained in bf16 or float32); no "z" when `with_z` is false (no head: z = h)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(images):
        h = encoder(tf.cast(images, tf.float32) / 255.0, training=False)["final_avg_pool"]
        return h, head(h, training=False)[-1]

    features = {"h": [], "z": []}
    for split in splits:
        hs, zs = [], []
        for start in range(0, len(split.images), batch_size):
            h, z = forward(split.images[start : start + batch_size])
            hs.append(h.numpy())
            zs.append(z.numpy())
        features["h"].append(np.concatenate(hs))
        features["z"].append(np.concatenate(zs))
    if not with_z:
        del features["z"]
    return features


def run_features(run_dir, splits):
    """The features of a run directory's latest checkpoint."""
    from simclr_tf import checkpoints, run_dirs

    config = run_dirs.required_config(run_dir)
    encoder, head = _encoder_and_head(config)
    checkpoints.restore_parts({"encoder": encoder, "projection_head": head}, run_dir)
    return features_of(encoder, head, splits, config.model.proj_head_mode != "none")


def random_init_features(config, splits, seed):
    """The features of the untrained network a run of `config` starts from: the
    floor every pretraining is measured against."""
    import keras

    keras.utils.set_random_seed(seed)
    encoder, head = _encoder_and_head(config)
    return features_of(encoder, head, splits, config.model.proj_head_mode != "none")


def _l2(x):
    """In float64: without L2 normalisation in the loss, features can reach 1e19, whose
    squares overflow float32."""
    x = np.asarray(x, np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)).astype(np.float32)


def score(train_features, test_features, train, test, num_classes, seed=0):
    """{"knn_acc", "linear_acc", "linear_train_acc", "max_abs"} of one kind of feature,
    or {"non_finite": True, ...} when the network's output overflowed (nothing to score)."""
    from simclr_tf import evaluation, feature_probe

    if not (np.isfinite(train_features).all() and np.isfinite(test_features).all()):
        return {"non_finite": True}
    max_abs = float(max(np.abs(train_features).max(), np.abs(test_features).max()))

    predicted = evaluation.knn_predict(
        _l2(train_features), train.labels, _l2(test_features), num_classes, KNN_K, KNN_TEMPERATURE
    )
    linear, linear_train = feature_probe.linear_probe_accuracy(
        train_features, train.labels, test_features, test.labels, num_classes, seed=seed
    )
    return {
        "knn_acc": float(np.mean(predicted == test.labels)),
        "linear_acc": linear,
        "linear_train_acc": linear_train,
        "max_abs": max_abs,
    }


def evaluate_features(features, train, test, num_classes, seed=0):
    return {
        kind: score(f_train, f_test, train, test, num_classes, seed)
        for kind, (f_train, f_test) in features.items()
    }


def evaluate_run(run_dir, train, test, num_classes, seed=0):
    return evaluate_features(run_features(run_dir, [train, test]), train, test, num_classes, seed)
