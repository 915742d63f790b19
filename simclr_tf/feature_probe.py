"""Linear evaluation on frozen, precomputed features: a softmax regression on fixed
vectors, seconds on a CPU where `--mode=linear_eval` re-runs the encoder on augmented
images every step. Studies that compare many pretrainings use it (tools/studies).
"""

import numpy as np


def standardise(train, test):
    """Both arrays scaled by the training features' per-dimension mean and spread, so one
    learning rate suits every encoder whatever the scale of its features (computed in
    float64: an encoder trained without L2 normalisation can output 1e19)."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0) + 1e-6
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def linear_probe_accuracy(
    train_x,
    train_y,
    test_x,
    test_y,
    num_classes,
    epochs=30,
    batch_size=512,
    learning_rate=1e-2,
    weight_decay=1e-4,
    seed=0,
):
    """Top-1 test accuracy of a linear classifier trained on frozen features.

    Args:
      train_x, test_x: float [N, D] features (standardised here with the training
        split's statistics).
      train_y, test_y: int [N] labels in [0, num_classes).
      epochs, batch_size, learning_rate: AdamW on the softmax cross-entropy, with a
        cosine decay of the learning rate to 0.
      weight_decay: AdamW's decoupled decay of the weights.
      seed: initialisation and shuffling.

    Returns:
      (test accuracy, training accuracy), floats in [0, 1].

    Raises:
      ValueError: mismatched lengths, non-2-D or non-finite features, or labels out
        of range.
    """
    import keras

    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y, np.int64), np.asarray(test_y, np.int64)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be [N, D] alike, got {train_x.shape}, {test_x.shape}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels differ in length")
    if not (np.isfinite(train_x).all() and np.isfinite(test_x).all()):
        raise ValueError("features must be finite")
    for labels in (train_y, test_y):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
            )
    train_x, test_x = standardise(train_x, test_x)
    keras.utils.set_random_seed(seed)
    steps = epochs * -(-len(train_x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model = keras.Sequential(
        [keras.Input((train_x.shape[1],)), keras.layers.Dense(num_classes, dtype="float32")]
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    _, test_acc = model.evaluate(test_x, test_y, batch_size=4096, verbose=0)
    _, train_acc = model.evaluate(train_x, train_y, batch_size=4096, verbose=0)
    return float(test_acc), float(train_acc)
