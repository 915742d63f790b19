"""Keras models, one per objective, each owning its train and test step.

`call()` returns a dict of named endpoints (the encoder's, plus `proj_head_output`,
`logits`/`probabilities` where they exist), never tuples that change with a mode.
A hand-written loss is divided by the replica count in exactly one place, the step,
because Keras 3 sums gradients across replicas. `compile()` keeps BN, biases and the
linear classifiers out of the optimizer's weight decay (and LARS adaptation) whatever
optimizer is given, and adds the reference implementation's L2 term to the loss
(`loss_decay_variables`), so a model built by hand is trained as the paper trains it.
"""

import typing

import keras
import tensorflow as tf

from simclr_tf import keras_compat
from simclr_tf.models import heads, representation_health, resnet
from simclr_tf.models.weight_decay import loss_decay_variables, no_decay_variables

__all__ = [
    "ClassifierModel",
    "LabelledTerm",
    "PretrainModel",
    "loss_decay_variables",
    "masked_cross_entropy",
    "no_decay_variables",
]


def _num_replicas():
    return tf.distribute.get_replica_context().num_replicas_in_sync


class LabelledTerm(typing.NamedTuple):
    """The labelled examples' cross-entropy, for the gradient and for the metrics."""

    loss: tf.Tensor  # this replica's share of the mean over every replica's labelled rows
    mean_loss: tf.Tensor  # mean over this replica's labelled rows (0 if none)
    accuracy: tf.Tensor  # over this replica's labelled rows (0 if none)
    count: tf.Tensor  # this replica's labelled rows: the weight of the two above


def masked_cross_entropy(labels, logits):
    """Softmax cross-entropy over the examples that have a label.

    `loss` is normalised by the labelled count of the whole global batch (all-reduced
    across replicas), so after the step's one division by the replica count the
    summed gradients are those of the global mean over labelled rows: a label weighs
    the same whatever its batch-mates. Metrics take `mean_loss` and `accuracy` weighted
    by `count`, so a batch without labels adds nothing to them.

    Args:
      labels: int [B]; -1 marks an example without a label (it counts nowhere).
      logits: float [B, classes] (any float dtype; computed in float32).

    Returns:
      A `LabelledTerm` of float32 scalars; zero-safe when no example has a label.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = tf.cast(labels >= 0, tf.float32)
    count = tf.reduce_sum(valid)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    total_loss = tf.reduce_sum(per_example * valid)
    ctx = tf.distribute.get_replica_context()
    replicas = 1 if ctx is None else ctx.num_replicas_in_sync
    global_count = count
    if replicas > 1:
        global_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    local = tf.maximum(count, 1.0)
    return LabelledTerm(
        total_loss * replicas / tf.maximum(global_count, 1.0),
        total_loss / local,
        tf.reduce_sum(correct * valid) / local,
        count,
    )


class _Untracked:
    """Variables a built model refers to without Keras tracking them again."""

    def __init__(self, variables):
        self.variables = tuple(variables)


class _StepModel(keras_compat.StepModel):
    """Shared bits: named Mean trackers, weight decay, exclusions and the update.

    `weight_decay` is the coefficient of the reference's L2 term in the loss
    (`loss_decay_variables`); 0 leaves decay to the optimizer alone.
    """

    weight_decay = 0.0

    def compile(self, optimizer="rmsprop", **kwargs):
        """`keras.Model.compile`, then BN, bias and classifier variables (chosen by
        object, `no_decay_variables`) are excluded from the optimizer's weight decay
        and LARS adaptation, on top of any exclusions the optimizer already has, and
        the variables of the L2 term in the loss are chosen for this optimizer.

        Args:
          optimizer: a Keras optimizer (e.g. `simclr_tf.LARS`) or its name; it must
            not be built yet, since Keras fixes exclusions when it builds.
          **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).
        """
        super().compile(optimizer=optimizer, **kwargs)
        keras_compat.exclude_from_weight_decay(self.optimizer, no_decay_variables(self))
        self._loss_decayed = _Untracked(loss_decay_variables(self, self.optimizer))

    def _weight_decay_term(self):
        """The reference's `add_weight_decay`: weight_decay * sum(v**2) / 2 (float32)."""
        decayed = getattr(self, "_loss_decayed", _Untracked(())).variables
        if not self.weight_decay or not decayed:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n(
            [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed]
        )

    @staticmethod
    def _unpack(data):
        """The feature dict, whether `fit` passed it alone or as (x, y, sample_weight)."""
        return keras.utils.unpack_x_y_sample_weight(data)[0]

    def _trackers_for(self, names):
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update(self, values, weight=None):
        """Weighted by the example count, so a short last batch is averaged exactly."""
        for name, value in values.items():
            self._trackers[name].update_state(value, sample_weight=weight)

    def _logs(self, extra=None):
        logs = {name: t.result() for name, t in self._trackers.items()}
        logs.update(extra or {})
        return self.step_logs(logs)

    def _scaled(self, loss):
        """loss / replicas (the one place it is divided), loss-scaled under float16.

        Must be called inside the gradient tape.
        """
        return self.optimizer.scale_loss(loss / _num_replicas())

    def _apply(self, tape, scaled):
        """Applies the gradients; returns the learning rate this update used."""
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        learning_rate = tf.identity(self.optimizer.learning_rate)
        with tf.control_dependencies([learning_rate]):
            self.optimizer.apply(grads, variables)
        return learning_rate


class PretrainModel(_StepModel):
    """Two views -> encoder -> projection head -> contrastive loss (+ linear probe).

    Args:
      encoder: a model mapping images to a dict with `final_avg_pool` ([B, C]), e.g.
        `resnet(...)`.
      projection_head: a `ProjectionHead` (its last output is z).
      contrastive_loss: (z1, z2 float32 [n, d]) -> (loss, metrics dict), e.g.
        `functools.partial(nt_xent, temperature=0.5)`.
      num_classes: > 0 adds the online linear probe on stop-gradient(h), trained with
        the labels in each batch (the paper's monitor; examples labelled -1 skip it).
      weight_decay: the coefficient of the reference's L2 term in the loss (with
        LARS: on the probe's kernel; see `loss_decay_variables`), reported as the
        `weight_decay` metric.

    Train on batches of {"view1", "view2": float [B, H, W, 3], "label": int [B]}
    (`pretrain_dataset`). Calling the model on images returns the encoder's
    endpoints plus `proj_head_output` (z) and, with a probe, `probe_logits`.
    """

    def __init__(
        self, encoder, projection_head, contrastive_loss, num_classes=0, weight_decay=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.projection_head = projection_head
        self.contrastive_loss = contrastive_loss  # (z1, z2) -> (loss, metrics)
        self.probe = (
            heads.linear_head(num_classes, "probe", zero_init=True) if num_classes else None
        )
        self.weight_decay = weight_decay
        names = ["loss", "contrast_loss", "contrast_acc", "contrast_entropy", "weight_decay"]
        names += ["proj_std", "effective_rank"]  # representation_health.py
        if self.probe is not None:
            names += ["probe_loss", "probe_acc"]
        self._trackers_for(names)

    def call(self, images, training=False):
        out = dict(self.encoder(images, training=training))
        out["proj_head_output"] = self.projection_head(out["final_avg_pool"], training=training)[-1]
        if self.probe is not None:
            out["probe_logits"] = self.probe(tf.stop_gradient(out["final_avg_pool"]))
        return out

    def train_step(self, data):
        data = self._unpack(data)
        images = tf.concat([data["view1"], data["view2"]], axis=0)
        with tf.GradientTape() as tape:
            out = self(images, training=True)
            z1, z2 = tf.split(tf.cast(out["proj_head_output"], tf.float32), 2, axis=0)
            contrast_loss, values = self.contrastive_loss(z1, z2)
            loss = contrast_loss
            values = dict(values, contrast_loss=contrast_loss)
            probe = None
            if self.probe is not None:
                labels = tf.concat([data["label"], data["label"]], axis=0)
                probe = masked_cross_entropy(labels, out["probe_logits"])
                loss += probe.loss
            decay = self._weight_decay_term()
            loss += decay
            scaled = self._scaled(loss)
        learning_rate = self._apply(tape, scaled)
        values.update(loss=loss, weight_decay=decay)
        values.update(representation_health.metrics(out["proj_head_output"], out["final_avg_pool"]))
        self._update(values)
        if probe is not None:  # over labelled rows only
            self._update({"probe_loss": probe.mean_loss, "probe_acc": probe.accuracy}, probe.count)
        return self._logs({"learning_rate": learning_rate})

    def test_step(self, data):
        """Linear-probe accuracy on eval images (the paper's pretraining monitor)."""
        if self.probe is None:
            return {}
        data = self._unpack(data)
        out = self(data["image"], training=False)
        probe = masked_cross_entropy(data["label"], out["probe_logits"])
        self._update({"probe_loss": probe.mean_loss, "probe_acc": probe.accuracy}, probe.count)
        return {k: v for k, v in self._logs().items() if k.startswith("probe_")}


class ClassifierModel(_StepModel):
    """Linear eval (frozen encoder), fine-tuning, or a supervised baseline.

    Args:
      encoder: as in `PretrainModel`.
      num_classes: logits of the linear head.
      projection_head: needed when `head_layer` > 0.
      head_layer: k > 0 feeds the classifier from projection-head layer k (SimCLRv2
        fine-tunes from k = 1); 0 reads the representation h.
      freeze_encoder: linear eval: no gradients into the encoder, BN in inference mode.
      fine_tune_after_block: k >= 0 freezes the encoder up to block group k (0: the
        stem only); -1 trains all of it.
      weight_decay: the coefficient of the reference's L2 term in the loss
        (`loss_decay_variables`), reported as the `weight_decay` metric.

    Train on batches of {"image": float [B, H, W, 3], "label": int [B]}; calling it
    returns the encoder's endpoints plus `logits` and `probabilities` ([B, classes]).
    """

    def __init__(
        self,
        encoder,
        num_classes,
        projection_head=None,
        head_layer=0,
        freeze_encoder=False,
        fine_tune_after_block=-1,
        weight_decay=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight_decay = weight_decay
        if head_layer > 0 and projection_head is None:
            raise ValueError("head_layer > 0 needs a projection head")
        if head_layer > 0 and head_layer >= projection_head.num_outputs:
            raise ValueError(
                f"ft_proj_selector {head_layer} is past the projection head's "
                f"{projection_head.num_outputs - 1} layers"
            )
        self.encoder = encoder
        self.projection_head = projection_head
        self.head_layer = head_layer
        self.freeze_encoder = freeze_encoder
        self.linear_head = heads.linear_head(num_classes)
        if freeze_encoder:
            encoder.trainable = False
            if projection_head is not None:
                projection_head.trainable = False
        if not freeze_encoder and fine_tune_after_block >= 0:
            endpoint = (
                "initial_conv"
                if fine_tune_after_block == 0
                else f"block_group{fine_tune_after_block}"
            )
            resnet.freeze_through(encoder, endpoint)
        self._trackers_for(["loss", "accuracy", "weight_decay"])

    def freeze_unused_head_layers(self):
        """Head layers past the one the classifier reads get no gradient; once built."""
        if self.projection_head is not None:
            for unused in self.projection_head.layers_[self.head_layer :]:
                unused.trainable = False

    def call(self, images, training=False):
        trunk_training = training and not self.freeze_encoder
        out = dict(self.encoder(images, training=trunk_training))
        features = out["final_avg_pool"]
        if self.head_layer > 0:
            features = self.projection_head(features, training=trunk_training)[self.head_layer]
        if self.freeze_encoder:
            features = tf.stop_gradient(features)
        logits = tf.cast(self.linear_head(features), tf.float32)
        out.update(logits=logits, probabilities=tf.nn.softmax(logits))
        return out

    def train_step(self, data):
        data = self._unpack(data)
        with tf.GradientTape() as tape:
            logits = self(data["image"], training=True)["logits"]
            labelled = masked_cross_entropy(data["label"], logits)
            decay = self._weight_decay_term()
            scaled = self._scaled(labelled.loss + decay)
        learning_rate = self._apply(tape, scaled)
        self._update({"loss": labelled.loss + decay, "weight_decay": decay})
        self._update({"accuracy": labelled.accuracy}, labelled.count)
        return self._logs({"learning_rate": learning_rate})

    def test_step(self, data):
        data = self._unpack(data)
        logits = self(data["image"], training=False)["logits"]
        labelled = masked_cross_entropy(data["label"], logits)
        self._update({"loss": labelled.mean_loss, "accuracy": labelled.accuracy}, labelled.count)
        return {k: v for k, v in self._logs().items() if k in ("loss", "accuracy")}
