"""Optimizer construction: LARS, momentum SGD or AdamW, BN and biases excluded from decay."""

import keras

from simclr_tf.lars import LARS


def build_optimizer(name, learning_rate, momentum, weight_decay, no_decay_variables):
    """`no_decay_variables` get neither weight decay nor (for LARS) adaptation."""
    if name == "lars":
        optimizer = LARS(learning_rate, momentum=momentum, weight_decay=weight_decay)
    elif name == "momentum":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=False,
                                         weight_decay=weight_decay or None)
    elif name == "adam":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    optimizer.exclude_from_weight_decay(var_list=list(no_decay_variables))
    return optimizer
