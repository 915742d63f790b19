"""The encoder of any run directory or exported SavedModel, as one function images ->
representations, for tools that look at what a run learned (neighbours, embeddings).
"""

import tensorflow as tf

from simclr_tf import checkpoints, run_dirs
from simclr_tf.models import builders


def load_encoder(path, projection=False):
    """(encoder_fn, image_size): encoder_fn maps float32 [B, S, S, 3] images in [0, 1]
    to {"final_avg_pool": float32 [B, C]} (h) in inference mode, plus
    {"proj_head_output": float32 [B, d]} (z) with `projection`; S = image_size.

    `path` is a simclr_tf run directory (any mode; its latest checkpoint) or a
    SavedModel from `--mode=export` (its `serving_default`).

    Raises:
      FileNotFoundError: no run, checkpoint or SavedModel at `path`.
      ValueError: a SavedModel that serves no `final_avg_pool` (or no
        `proj_head_output` when asked), a run without a projection head when asked.
    """
    keys = ("final_avg_pool", "proj_head_output") if projection else ("final_avg_pool",)
    if tf.saved_model.contains_saved_model(path):
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures.get("serving_default")
        missing = [k for k in keys if serve is None or k not in serve.structured_outputs]
        if missing:
            raise ValueError(f"{path}: its serving_default returns no {', '.join(missing)}")
        size = int(serve.structured_input_signature[1]["images"].shape[1])

        def served(images, training=False):
            out = serve(images=tf.cast(images, tf.float32))
            return {k: tf.cast(out[k], tf.float32) for k in keys}

        served.module = loaded
        return served, size
    saved = run_dirs.required_config(path)
    checkpoint = tf.train.latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {path}")
    encoder = builders.build_encoder(saved)
    parts = {"encoder": encoder}
    head = None
    if projection:
        if saved.model.proj_head_mode == "none":
            raise ValueError(f"{path}: the run has no projection head (z)")
        head = parts["projection_head"] = builders.build_projection_head(saved)
    checkpoints.restore_parts(parts, checkpoint)

    def restored(images, training=False):
        out = encoder(images, training=False)
        result = {"final_avg_pool": tf.cast(out["final_avg_pool"], tf.float32)}
        if head is not None:
            z = head(out["final_avg_pool"], training=False)[-1]
            result["proj_head_output"] = tf.cast(z, tf.float32)
        return result

    restored.model = encoder
    return restored, saved.data.image_size
