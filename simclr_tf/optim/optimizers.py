"""The optimizers a run can choose: LARS (the paper's), momentum SGD or AdamW.

Weight-decay exclusions are not chosen here: the step models' `compile()` adds them
(BN, biases and classifiers, by object), so every optimizer gets the same ones.
"""

import keras

from simclr_tf.config import OPTIMIZERS
from simclr_tf.optim.lars import LARS


def build_optimizer(name, learning_rate, momentum=0.9, weight_decay=0.0):
    """A fresh (unbuilt) optimizer.

    Args:
      name: `lars`, `momentum` (SGD with momentum) or `adam` (AdamW).
      learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
      momentum: momentum of LARS and SGD (AdamW ignores it).
      weight_decay: LARS adds it to the gradient (as SimCLR does); SGD and AdamW
        decouple it (Keras' convention).

    Returns:
      A `keras.optimizers.Optimizer`.
    """
    if name == "lars":
        return LARS(learning_rate, momentum=momentum, weight_decay=weight_decay)
    if name == "momentum":
        return keras.optimizers.SGD(
            learning_rate, momentum=momentum, nesterov=False, weight_decay=weight_decay or None
        )
    if name == "adam":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")
