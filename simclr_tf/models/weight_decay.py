"""Which variables weight decay reaches, chosen by object (never by name).

Two sets, as the reference implementation has them: what the optimizer decays (and
LARS adapts), and what the reference's `add_weight_decay` puts into the loss as an L2
term, which depends on the optimizer.
"""

import keras

from simclr_tf import keras_compat
from simclr_tf.optim.lars import LARS


def _classifiers(model):
    return [h for h in (getattr(model, n, None) for n in ("probe", "linear_head")) if h]


def _bn_variables(model):
    return [
        v
        for layer in keras_compat.all_sublayers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.gamma, layer.beta)
        if v is not None
    ]


def no_decay_variables(model):
    """BN, bias and linear-classifier variables, chosen by object (never by name).

    The classifier (probe or linear head) starts near zero, where LARS' trust ratio
    would keep it near zero; the reference implementation excludes it too.
    """
    chosen = [v for head in _classifiers(model) for v in head.trainable_variables]
    chosen += _bn_variables(model)
    for layer in keras_compat.all_sublayers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            if getattr(layer, "bias", None) is not None:
                chosen.append(layer.bias)
    return chosen


def loss_decay_variables(model, optimizer):
    """The variables whose `weight_decay * sum(v**2) / 2` the reference adds to the loss
    (its `add_weight_decay`): with LARS, which decays the others itself, the classifier
    kernels; with any other optimizer every trainable variable but batch norm's."""
    trainable = {id(v) for v in model.trainable_variables}
    if isinstance(optimizer, LARS):
        chosen = [h.kernel for h in _classifiers(model)]
    else:
        bn = {id(v) for v in _bn_variables(model)}
        chosen = [v for v in model.trainable_variables if id(v) not in bn]
    return [v for v in chosen if id(v) in trainable]
