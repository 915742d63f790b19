"""A run directory's own record of itself: the `config.json` every run writes.

Read back by `--mode=eval` (the architecture need not be repeated), by export, and to
say which settings differ when a checkpoint does not fit the model being built.
"""

import json
import os

import tensorflow as tf

from simclr_tf import config as config_lib

CONFIG_FILE = "config.json"
ARCHITECTURE_FIELDS = (
    "depth",
    "width_multiplier",
    "sk_ratio",
    "cifar_stem",
    "proj_head_mode",
    "num_proj_layers",
    "proj_out_dim",
)


def saved_config(run_dir):
    """The Config a run wrote into `run_dir` (a directory, or a checkpoint prefix in
    one), or None where there is no config.json."""
    directory = run_dir if tf.io.gfile.isdir(run_dir) else os.path.dirname(run_dir)
    path = os.path.join(directory, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return config_lib.from_dict(json.load(f))


def required_config(run_dir):
    """`saved_config`, or a one-line FileNotFoundError."""
    saved = saved_config(run_dir)
    if saved is None:
        raise FileNotFoundError(
            f"{os.path.join(run_dir, CONFIG_FILE)} not found: is {run_dir} a simclr_tf run?"
        )
    return saved


def architecture_differences(model_config, run_dir):
    """'--depth=50 there, 18 here, ...' for the architecture settings that differ from
    the run in `run_dir` ('' where it has no config.json or none differ)."""
    saved = saved_config(run_dir)
    if saved is None:
        return ""
    return ", ".join(
        f"--{name}={getattr(saved.model, name)} there, {getattr(model_config, name)} here"
        for name in ARCHITECTURE_FIELDS
        if getattr(saved.model, name) != getattr(model_config, name)
    )


def write_json_atomic(path, payload):
    """Writes JSON through a temporary file and a rename, so a reader never sees half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tf.io.gfile.rename(tmp, path, overwrite=True)
