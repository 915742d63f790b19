"""The model card every export writes beside the model (`MODEL_CARD.md` and
`model_card.json`): what the network is, what it takes and returns, how it was
trained and how well it did, and where converted weights came from."""

import json
import os
import subprocess

import tensorflow as tf

from simclr_tf import run_dirs

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
# google-research/simclr and its released checkpoints.
REFERENCE_LICENSE = "Apache License 2.0 (google-research/simclr)"
PREPROCESSING = (
    "float32 RGB in [0, 1], square; images larger than 32 px are centre-cropped to "
    "87.5% then resized to the input size (bicubic), as the run's evaluation does"
)


def source_commit():
    """The git commit of the code that exported, or "unknown" outside a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def card(model, run_config, model_dir, checkpoint, signatures, tflite=None):
    """The card's record, from the model, its run directory and what was exported."""
    m, d, r = run_config.model, run_config.data, run_config.run
    results = _read_json(os.path.join(model_dir, "results.json")) or {}
    saved = _read_json(os.path.join(model_dir, run_dirs.CONFIG_FILE)) or {}
    conversion = _read_json(os.path.join(model_dir, "conversion.json"))
    accuracy = {
        k: results[k]
        for k in ("knn_acc", "eval_probe_acc", "eval_accuracy", "eval_examples")
        if k in results
    }
    record = {
        "model": "SimCLR (simclr_tf)",
        "architecture": {
            "encoder": f"ResNet-{m.depth} {m.width_multiplier}x"
            + (f", selective kernels {m.sk_ratio}" if m.sk_ratio else ""),
            "projection_head": f"{m.proj_head_mode}, {m.num_proj_layers} layers, "
            f"out {m.proj_out_dim}",
            "parameters": int(sum(int(tf.size(v)) for v in model.variables)),
            "trainable_parameters": int(sum(int(tf.size(v)) for v in model.trainable_variables)),
        },
        "input": {
            "shape": [None, d.image_size, d.image_size, 3],
            "dtype": "float32",
            "preprocessing": PREPROCESSING,
        },
        "signatures": signatures,
        "training": {
            "mode": r.mode,
            "dataset": d.dataset,
            "train_split": d.train_split,
            "steps": int(results.get("global_step", int(checkpoint.rsplit("-", 1)[-1]))),
            "batch_size": d.batch_size,
            "precision": (saved.get("resolved") or {}).get("precision", r.precision),
            "checkpoint": checkpoint,
        },
        "accuracy": accuracy or "not measured by the run",
        "source_commit": source_commit(),
    }
    if conversion is not None:
        record["converted_from"] = {
            "checkpoint": conversion.get("source"),
            "format": conversion.get("format"),
            "license": REFERENCE_LICENSE,
        }
    if tflite:
        record["tflite"] = tflite
    return record


def write(directory, record):
    """`model_card.json` and `MODEL_CARD.md` in `directory`."""
    run_dirs.write_json_atomic(os.path.join(directory, CARD_JSON), record)
    a, i, t = record["architecture"], record["input"], record["training"]
    lines = [
        f"# Model card: {a['encoder']}",
        "",
        f"{record['model']}, exported from `{t['checkpoint']}` (source commit "
        f"`{record['source_commit']}`).",
        "",
        "## Architecture",
        f"- Encoder: {a['encoder']}; projection head: {a['projection_head']}.",
        f"- Parameters: {a['parameters']:,} ({a['trainable_parameters']:,} trainable).",
        "",
        "## Input",
        f"- `images`: {i['dtype']} {i['shape']}; {i['preprocessing']}.",
        "",
        "## Signatures",
        *[f"- `{name}`: {', '.join(outs)}" for name, outs in record["signatures"].items()],
        "",
        "## Training",
        f"- {t['mode']} on {t['dataset']} ({t['train_split']}), {t['steps']} steps of "
        f"batch {t['batch_size']}, {t['precision']}.",
        "",
        "## Accuracy",
    ]
    accuracy = record["accuracy"]
    if isinstance(accuracy, dict):
        lines += [f"- {k}: {v}" for k, v in accuracy.items()]
    else:
        lines.append(f"- {accuracy}.")
    if "converted_from" in record:
        c = record["converted_from"]
        lines += [
            "",
            "## Converted weights",
            f"- From `{c['checkpoint']}` ({c['format']}); licence: {c['license']}.",
        ]
    if "tflite" in record:
        lines += ["", "## LiteRT / TensorFlow Lite"]
        lines += [
            f"- {kind}: `{os.path.basename(v['path'])}`, {v['bytes']:,} bytes"
            for kind, v in record["tflite"].items()
        ]
    with tf.io.gfile.GFile(os.path.join(directory, CARD_MD), "w") as f:
        f.write("\n".join(lines) + "\n")
