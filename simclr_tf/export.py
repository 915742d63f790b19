"""SavedModel export: serving signatures and a TF Hub (TF2) feature-vector module.

One directory serves both uses:
- signatures `serving_default` (float images in [0, 1], `[batch, H, W, 3]`) and
  `serving_bytes` (encoded JPEG/PNG/BMP/GIF strings, decoded and eval-preprocessed in
  the graph) return a dict with stable keys: `final_avg_pool`, `block_group1..4`, and
  `proj_head_output` and/or `logits`/`probabilities` when the model has them (a
  pretraining run's are its linear probe's);
  `features_training` is the same as `serving_default` with BN in training mode, for
  `keras.layers.TFSMLayer(..., call_training_endpoint="features_training")`;
- the TF Hub reusable-SavedModel API: `__call__(images, training=False)` returning the
  representation `[batch, C]`, plus `variables`, `trainable_variables` and
  `regularization_losses`, so `hub.load` and `hub.KerasLayer(path, trainable=True)` work.
"""

import os

import keras
import tensorflow as tf

from simclr_tf import checkpoints, export_tflite, model_card, run_dirs
from simclr_tf.augment import image_ops
from simclr_tf.models import builders

ENDPOINT_KEYS = (
    "final_avg_pool",
    "block_group1",
    "block_group2",
    "block_group3",
    "block_group4",
    "proj_head_output",
    "logits",
    "probabilities",
)


def _outputs(model, images, training):
    out = dict(model(images, training=training))
    if "logits" not in out and "probe_logits" in out:
        # A pretraining run's classifier is its linear probe (for a converted reference
        # checkpoint, the reference's supervised head).
        out["logits"] = out["probe_logits"]
        out["probabilities"] = tf.nn.softmax(tf.cast(out["logits"], tf.float32))
    return {k: tf.cast(out[k], tf.float32) for k in ENDPOINT_KEYS if k in out}


class ExportModule(tf.Module):
    """Wraps a built model; every function here is saved with a fixed signature."""

    # TF Hub reads these as saved attributes; tf.Module's computed properties are not
    # saved, so plain attributes shadow them.
    variables = None
    trainable_variables = None

    def __init__(self, model, image_size):
        super().__init__(name="simclr")
        self.model = model
        self.image_size = image_size
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        self.serve = tf.function(
            lambda images: _outputs(self.model, images, False), input_signature=[spec]
        )
        self.features_training = tf.function(
            lambda images: _outputs(self.model, images, True), input_signature=[spec]
        )
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")],
        )
        self.__call__ = tf.function(self._call)
        # The TF Hub reusable-SavedModel attributes.
        # The tf.Variables under the Keras wrappers: tracking the wrappers leaves the
        # graph's captured handles without a restore entry, and TF1-style loaders
        # (saved_model_cli run, TF Serving) then fail with "Could not find variable".
        self.variables = [v.value for v in model.variables]
        self.trainable_variables = [v.value for v in model.trainable_variables]
        self.regularization_losses = []

    def _serve_bytes(self, encoded):
        size = self.image_size

        def preprocess(contents):
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
            return image_ops.eval_view(image, size, size)

        images = tf.map_fn(
            preprocess, encoded, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32)
        )
        return _outputs(self.model, images, False)

    def _call(self, images, training=False):
        return tf.cast(self.model(images, training=training)["final_avg_pool"], tf.float32)

    def trace_hub_call(self):
        spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training)


def export_saved_model(model, image_size, export_dir):
    """Writes a model as a SavedModel with serving signatures and the TF Hub API.

    Written to a temporary directory and renamed, so an interrupted export never
    leaves a half-written `export_dir`.

    Args:
      model: a `PretrainModel` or `ClassifierModel` (its call returns the endpoint dict).
      image_size: the side of the square float images the signatures take.
      export_dir: where to write (replaced if it exists).

    Returns:
      `export_dir`.
    """
    module = ExportModule(model, image_size)
    module.trace_hub_call()
    signatures = {
        "serving_default": module.serve,
        "serving_bytes": module.serve_bytes,
        "features_training": module.features_training,
    }
    tmp = export_dir.rstrip("/") + f".tmp-{os.getpid()}"
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    tf.saved_model.save(module, tmp, signatures=signatures)
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    tf.io.gfile.rename(tmp, export_dir)
    return export_dir


def export_from_config(config):
    """Exports the latest checkpoint of `config.run.model_dir` (any kind of run), in
    float32 whatever the run trained in, so the SavedModel serves on any hardware."""
    model_dir = config.run.model_dir
    run_config = run_dirs.required_config(model_dir)
    checkpoint = tf.train.latest_checkpoint(model_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {model_dir}")
    names = {name.split("/")[0] for name, _ in tf.train.list_variables(checkpoint)}
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        if run_config.run.mode == "pretrain":
            num_classes = checkpoints.head_classes(checkpoint, "probe") if "probe" in names else 0
            model = builders.pretrain_model(run_config, num_classes)
        else:
            model = builders.classifier_model(
                run_config, checkpoints.head_classes(checkpoint, "linear_head")
            )
    finally:
        keras.mixed_precision.set_global_policy(policy)
    checkpoints.restore_model(model, checkpoint)
    export_dir = config.run.export_dir or os.path.join(model_dir, "export")
    size = run_config.data.image_size
    export_saved_model(model, size, export_dir)
    result = {"export_dir": export_dir, "checkpoint": checkpoint, "image_size": size}
    if config.run.export_tflite:
        result["tflite"] = export_tflite.write_tflite(model, size, export_dir)
    outputs = sorted(_outputs(model, tf.zeros([1, size, size, 3]), False))
    signatures = {
        "serving_default": outputs,
        "serving_bytes": outputs,
        "features_training": outputs,
    }
    record = model_card.card(
        model, run_config, model_dir, checkpoint, signatures, result.get("tflite")
    )
    model_card.write(export_dir, record)
    result["model_card"] = os.path.join(export_dir, model_card.CARD_MD)
    return result
