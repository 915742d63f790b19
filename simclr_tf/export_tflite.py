"""The encoder as LiteRT / TensorFlow Lite flatbuffers (`--mode=export --export_tflite`).

Converted with the `tf.lite.TFLiteConverter` TensorFlow 2.21 ships (LiteRT's own Python
package, ai-edge-litert, is a runtime: it reads these files with the same Interpreter
API, and converting needs no package beyond TensorFlow). Two files:
- `encoder.tflite`: float32;
- `encoder_int8.tflite`: dynamic-range quantisation, weights int8 (per output
  channel), activations float: about a quarter of the size and no calibration data.
Both take float32 [N, S, S, 3] images in [0, 1] (the batch resizable) and return h
(`final_avg_pool`) and, for runs with a projection head, z (`proj_head_output`).
"""

import os

import tensorflow as tf

TFLITE_DIR = "tflite"
FILES = {"float32": "encoder.tflite", "int8_dynamic_range": "encoder_int8.tflite"}
OUTPUTS = ("final_avg_pool", "proj_head_output")


class _Encoder(tf.Module):
    """The encoder's outputs as one signature. Keras 3 variables are tracked through
    their tf.Variables (as `export.ExportModule` does), so the converter can freeze
    them into constants."""

    def __init__(self, model, image_size):
        super().__init__(name="encoder")
        self.model = model
        self.tf_variables = [v.value for v in model.variables]
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        self.encode = tf.function(self._encode, input_signature=[spec])

    def _encode(self, images):
        out = self.model(images, training=False)
        return {k: tf.cast(out[k], tf.float32) for k in OUTPUTS if k in out}


def write_tflite(model, image_size, export_dir):
    """Writes both files under `export_dir/tflite/`; returns {kind: {path, bytes}}."""
    module = _Encoder(model, image_size)
    directory = os.path.join(export_dir, TFLITE_DIR)
    staging = os.path.join(directory, f".saved_model.tmp-{os.getpid()}")
    tf.saved_model.save(module, staging, signatures={"serving_default": module.encode})
    written = {}
    try:
        for kind, name in FILES.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(staging)
            if kind == "int8_dynamic_range":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
            path = os.path.join(directory, name)
            with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
                f.write(flatbuffer)
            tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
            written[kind] = {"path": path, "bytes": len(flatbuffer)}
    finally:
        tf.io.gfile.rmtree(staging)
    return written
