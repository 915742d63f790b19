"""The encoder of any run directory or exported SavedModel, as one function images ->
representations, for tools that look at what a run learned (neighbours, embeddings).
"""

import tensorflow as tf

from simclr_tf import checkpoints, run_dirs
from simclr_tf.models import builders


def load_encoder(path):
    """(encoder_fn, image_size): encoder_fn maps float32 [B, S, S, 3] images in [0, 1]
    to {"final_avg_pool": float32 [B, C]} in inference mode; S = image_size.

    `path` is a simclr_tf run directory (any mode; its latest checkpoint) or a
    SavedModel from `--mode=export` (its `serving_default`).

    Raises:
      FileNotFoundError: no run, checkpoint or SavedModel at `path`.
      ValueError: a SavedModel that serves no `final_avg_pool`.
    """
    if tf.saved_model.contains_saved_model(path):
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures.get("serving_default")
        if serve is None or "final_avg_pool" not in serve.structured_outputs:
            raise ValueError(f"{path}: its serving_default returns no final_avg_pool")
        size = int(serve.structured_input_signature[1]["images"].shape[1])

        def served(images, training=False):
            out = serve(images=tf.cast(images, tf.float32))
            return {"final_avg_pool": tf.cast(out["final_avg_pool"], tf.float32)}

        served.module = loaded
        return served, size
    saved = run_dirs.required_config(path)
    checkpoint = tf.train.latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {path}")
    encoder = builders.build_encoder(saved)
    checkpoints.restore_parts({"encoder": encoder}, checkpoint)

    def restored(images, training=False):
        out = encoder(images, training=False)
        return {"final_avg_pool": tf.cast(out["final_avg_pool"], tf.float32)}

    restored.model = encoder
    return restored, saved.data.image_size
