"""The frozen teacher of a distillation run, from a fine-tuned run directory or from a
SavedModel exported by `--mode=export`.

Either way the teacher is a function images -> logits run in inference mode (batch
norm on its moving statistics) whose weights no optimizer sees.
"""

import tensorflow as tf
from absl import logging

from simclr_tf import checkpoints, run_dirs
from simclr_tf.config import ConfigError
from simclr_tf.models import builders

CLASSIFIER_MODES = ("linear_eval", "finetune", "supervised", "distill")


def load_teacher(path, image_size):
    """The teacher at `path`, for images of side `image_size`.

    Args:
      path: a simclr_tf classifier run directory (linear_eval, finetune, supervised
        or distill), or a SavedModel directory with a `serving_default` signature that
        returns `logits`.
      image_size: the side of the student's (and so the teacher's) input images.

    Returns:
      (logits_fn, num_classes): logits_fn maps float32 [B, S, S, 3] images in [0, 1]
      to float32 [B, num_classes] logits.

    Raises:
      ConfigError: the teacher has no classifier, or was made for another image size.
      FileNotFoundError: nothing readable at `path`.
    """
    if tf.saved_model.contains_saved_model(path):
        return _saved_model_teacher(path, image_size)
    saved = run_dirs.required_config(path)
    if saved.run.mode not in CLASSIFIER_MODES:
        raise ConfigError(
            f"--teacher {path} is a {saved.run.mode} run, which has no "
            "classifier: fine-tune it first (--mode=finetune) and distil "
            "from that run"
        )
    if saved.data.image_size != image_size:
        raise ConfigError(
            f"--teacher {path} takes {saved.data.image_size} px images, the "
            f"student {image_size} px: set --image_size={saved.data.image_size}"
        )
    checkpoint = tf.train.latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {path}")
    model = builders.classifier_model(saved, checkpoints.head_classes(checkpoint, "linear_head"))
    checkpoints.restore_model(model, checkpoint)
    model.trainable = False

    def logits(images):
        return tf.cast(model(images, training=False)["logits"], tf.float32)

    logits.model = model  # keeps the teacher alive beside the function
    return logits, int(model.linear_head.units)


def _saved_model_teacher(path, image_size):
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures.get("serving_default")
    if serve is None or "logits" not in serve.structured_outputs:
        raise ConfigError(
            f"--teacher {path}: its serving_default returns no logits (export "
            "a classifier run, or a pretraining run with a linear probe)"
        )
    spec = serve.structured_input_signature[1]["images"]
    if spec.shape[1] != image_size:
        raise ConfigError(
            f"--teacher {path} takes {spec.shape[1]} px images, the student "
            f"{image_size} px: set --image_size={spec.shape[1]}"
        )
    classes = int(serve.structured_outputs["logits"].shape[-1])
    if "proj_head_output" in serve.structured_outputs:
        logging.warning(
            "--teacher %s is a pretraining run's export: its logits are the online "
            "probe's, which saw every label of that run's training split, so the student "
            "learns from all of them whatever --label_fraction says",
            path,
        )

    def logits(images):
        return serve(images=tf.cast(images, tf.float32))["logits"]

    logits.module = loaded
    return logits, classes
