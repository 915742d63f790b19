"""The benchmark flags (one definition, read by every mode) and the repository root."""

import os

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data directory holding cifar10.")
flags.DEFINE_integer("depth", 18, "ResNet depth (project model).")
flags.DEFINE_float("width", 1.0, "Width multiplier.")
flags.DEFINE_integer("batch", 256, "Global batch size (images; 2 views each).")
flags.DEFINE_list(
    "precisions",
    ["auto", "float32", "mixed_bfloat16"],
    "Precisions to compare; auto is what a run picks here (duplicates and "
    "bf16 that cannot run here are dropped).",
)
flags.DEFINE_bool("xla", False, "jit_compile the train steps.")
flags.DEFINE_bool("baseline", True, "Also time the plain Keras baseline (step).")
flags.DEFINE_bool(
    "torch_baseline",
    True,
    "Also time the plain PyTorch baseline (step; skipped if torch is missing).",
)
flags.DEFINE_integer("torch_threads", 2, "Threads for the PyTorch baseline.")
flags.DEFINE_string(
    "torch_python",
    None,
    "The Python of the environment holding requirements-bench.txt (torch, lightly): "
    "accuracy's lightly runs and step's PyTorch baseline (default there: this Python).",
)
flags.DEFINE_integer(
    "devices",
    1,
    "Logical CPU devices; > 1 runs the project step and fit under MirroredStrategy across them.",
)
flags.DEFINE_bool("batched_augment", True, "Views made per batch (else image by image).")
flags.DEFINE_bool(
    "augment_jit_compile", True, "The batched views' pixel arithmetic compiled by XLA."
)
flags.DEFINE_bool(
    "matmul_kernel_grad",
    True,
    "Project model: bf16 kernel gradients of small "
    "conv outputs as one patch matmul (simclr_tf.models.conv), where a run would "
    "use it (hardware.matmul_kernel_grad_applies).",
)
flags.DEFINE_bool(
    "compare_kernel_grad",
    False,
    "step: also time the project's bf16 step with --nomatmul_kernel_grad.",
)
flags.DEFINE_integer("warmup", 5, "Untimed steps first.")
flags.DEFINE_integer("repeats", 15, "Timed steps.")
flags.DEFINE_integer(
    "rounds",
    3,
    "fit: alternating rounds of the training path and the "
    "step alone (each --warmup + --repeats steps), within one run.",
)
flags.DEFINE_bool(
    "after_first_epoch",
    True,
    "input/fit: time only after one pass over the "
    "training split, when the recipes' in-memory cache serves decoded images "
    "(as in every epoch of a run but the first); else the first pass, with "
    "decoding.",
)
flags.DEFINE_integer(
    "checkpoint_steps",
    200,
    "fit: steps between checkpoints the save time is spread over (the CPU recipes' value).",
)
flags.DEFINE_float("budget_minutes", 10.0, "budget: wall-clock pretraining budget.")
flags.DEFINE_integer(
    "steps",
    0,
    "budget: pretrain exactly this many steps instead (equal-step comparisons of --precisions).",
)
flags.DEFINE_integer("linear_epochs", 2, "budget: linear-eval epochs on the frozen encoder.")
flags.DEFINE_integer("seed", 0, "budget: weight-init, data-order and augmentation seed.")
flags.DEFINE_bool("random_init", True, "budget: also evaluate a random-init encoder.")
flags.DEFINE_string(
    "eval_precision",
    None,
    "budget: evaluate every encoder (kNN and linear "
    "eval) in this precision instead of its pretraining one, so "
    "precisions are compared on what they learned.",
)
flags.DEFINE_integer("loss_batch", 8192, "memory: global batch of the loss measurement.")
flags.DEFINE_string(
    "memory_worker", None, "Internal: the one measurement a `memory` subprocess makes."
)
flags.DEFINE_integer("steps_per_execution", 8, "execution: steps per compiled call, against one.")
flags.DEFINE_string("output", None, "Write the JSON result here too.")
flags.DEFINE_bool("append", False, "Append the table to docs/benchmarks-history.md.")
