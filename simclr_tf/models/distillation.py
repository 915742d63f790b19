"""The student of SimCLRv2's distillation step: a classifier trained on a frozen
teacher's tempered predictions for unlabeled images, optionally plus the labels of a
small labelled subset.

The teacher is a function images -> logits held outside Keras' tracking, so its
weights are never trained, never saved with the student and its batch norm always
runs in inference mode.
"""

import tensorflow as tf

from simclr_tf import losses
from simclr_tf.models.step_models import ClassifierModel, masked_cross_entropy


class DistillationModel(ClassifierModel):
    """A `ClassifierModel` whose train step distils from a teacher.

    Args:
      teacher: images float [B, H, W, 3] -> logits [B, classes]; called in inference
        mode, its output treated as a constant.
      temperature: tau of `losses.distillation_loss`.
      label_weight: weight of the cross-entropy on labelled examples (label >= 0);
        0 reads no labels.
      *args, **kwargs: those of `ClassifierModel` (the student's encoder, classes,
        head layer, ...).

    Train on batches of {"image": float [B, H, W, 3], "label": int [B], -1 where the
    example is unlabelled}.
    """

    def __init__(self, *args, teacher, temperature=1.0, label_weight=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._teacher = [teacher]  # a list: Keras does not track a plain function in it
        self.temperature = temperature
        self.label_weight = label_weight
        names = ["loss", "accuracy", "distill_loss", "teacher_agreement"]
        if label_weight > 0:
            names.append("label_loss")
        self._trackers_for(names)

    def teacher_logits(self, images):
        return tf.stop_gradient(tf.cast(self._teacher[0](images), tf.float32))

    def train_step(self, data):
        data = self._unpack(data)
        images = data["image"]
        teacher = self.teacher_logits(images)
        with tf.GradientTape() as tape:
            logits = self(images, training=True)["logits"]
            distill = losses.distillation_loss(teacher, logits, self.temperature)
            loss, values = distill, {"distill_loss": distill}
            labelled = None
            if self.label_weight > 0:
                labelled = masked_cross_entropy(data["label"], logits)
                loss += self.label_weight * labelled.loss
            loss += self._weight_decay_term()
            scaled = self._scaled(loss)
        learning_rate = self._apply(tape, scaled)
        agree = tf.equal(tf.argmax(logits, -1), tf.argmax(teacher, -1))
        values.update(loss=loss, teacher_agreement=tf.reduce_mean(tf.cast(agree, tf.float32)))
        self._update(values)
        if labelled is not None:  # over labelled rows only: a batch without labels adds none
            labelled_values = {"label_loss": labelled.mean_loss, "accuracy": labelled.accuracy}
            self._update(labelled_values, labelled.count)
            values.update(labelled_values)
        logs = {name: self._trackers[name].result() for name in values}
        logs["learning_rate"] = learning_rate
        return self.step_logs(logs)
