"""The optimizers a run can choose: LARS (the paper's), momentum SGD or Adam(W).

Weight-decay exclusions are not chosen here: the step models' `compile()` adds them
(BN, biases and classifiers, by object), so every optimizer gets the same ones.
"""

import keras

from simclr_tf.config import OPTIMIZERS, WEIGHT_DECAY_MODES
from simclr_tf.optim.lars import LARS


def build_optimizer(name, learning_rate, momentum=0.9, weight_decay=0.0, mode="reference"):
    """A fresh (unbuilt) optimizer.

    Args:
      name: `lars`, `momentum` (SGD with momentum) or `adam`.
      learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
      momentum: momentum of LARS and SGD (Adam ignores it).
      weight_decay: LARS adds it to the gradient (as SimCLR does) in either mode. SGD
        and Adam: in `reference` mode they get none (the step model adds the
        reference's L2 term to the loss instead); `decoupled` gives SGD a decoupled
        decay and makes Adam AdamW (Keras' convention).
      mode: `reference` or `decoupled` (config.WEIGHT_DECAY_MODES). `reference` also
        makes `momentum` Nesterov's, as the reference's SGD is.

    Returns:
      A `keras.optimizers.Optimizer`.
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    decoupled = weight_decay if mode == "decoupled" else 0.0
    if name == "lars":
        return LARS(learning_rate, momentum=momentum, weight_decay=weight_decay)
    if name == "momentum":
        return keras.optimizers.SGD(
            learning_rate,
            momentum=momentum,
            nesterov=mode == "reference",
            weight_decay=decoupled or None,
        )
    if name == "adam":
        if not decoupled:
            return keras.optimizers.Adam(learning_rate)
        return keras.optimizers.AdamW(learning_rate, weight_decay=decoupled)
    raise ValueError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")
