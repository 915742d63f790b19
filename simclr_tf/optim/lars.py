"""LARS (You et al., 2017) as a Keras 3 optimizer, as SimCLR uses it.

Weight decay is added to the gradient (not decoupled) and the layer-wise trust ratio
`eeta * ||w|| / ||g + wd w||` scales the learning rate. Variables passed to
`exclude_from_weight_decay(var_list=...)` (BN and biases, chosen by object) get
neither weight decay nor adaptation: plain momentum SGD.
"""

import keras
from keras import ops


class LARS(keras.optimizers.Optimizer):
    """LARS with momentum, SimCLR's optimizer at large batch sizes.

    Args:
      learning_rate: float or schedule (e.g. `warmup_cosine`); SimCLR: 0.3 x B / 256.
      momentum: heavy-ball momentum.
      weight_decay: added to the gradient of non-excluded variables (SimCLR: 1e-6).
      eeta: the trust coefficient of ||w|| / ||g + wd w||.
      nesterov: Nesterov momentum.
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=0.0,
        eeta=0.001,
        nesterov=False,
        name="lars",
        **kwargs,
    ):
        # Keras' own `weight_decay` is decoupled; LARS folds it into the gradient.
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.eeta = eeta
        self.nesterov = nesterov

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.velocities = [self.add_variable_from_reference(v, "velocity") for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        if self._use_weight_decay(variable):
            if self.lars_weight_decay:
                gradient = gradient + self.lars_weight_decay * variable
            w_norm = ops.norm(ops.reshape(variable, [-1]))
            g_norm = ops.norm(ops.reshape(gradient, [-1]))
            trust = ops.where(
                w_norm > 0, ops.where(g_norm > 0, self.eeta * w_norm / g_norm, 1.0), 1.0
            )
            lr = lr * ops.cast(trust, variable.dtype)
        step = lr * gradient
        self.assign(velocity, self.momentum * velocity + step)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * velocity + step)
        else:
            self.assign_sub(variable, velocity)

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "weight_decay": self.lars_weight_decay,
            "eeta": self.eeta,
            "nesterov": self.nesterov,
        }
