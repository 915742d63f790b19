"""Learning-rate scaling and the warmup + cosine schedule.

The schedule is Keras' built-in `CosineDecay` with linear warmup from 0, which is the
reference implementation's formula: lr * step / warmup during warmup, then
0.5 * lr * (1 + cos(pi * (step - warmup) / (total - warmup))) down to 0.
"""

import math

import keras


def scaled_learning_rate(base_lr, global_batch_size, scaling="linear"):
    """lr * B / 256 (`linear`), lr * sqrt(B) (`sqrt`), or lr (`none`)."""
    if scaling == "linear":
        return base_lr * global_batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(global_batch_size)
    if scaling == "none":
        return base_lr
    raise ValueError(f"lr_scaling must be linear, sqrt or none, got {scaling!r}")


def warmup_cosine(peak_lr, warmup_steps, total_steps):
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then cosine decay to 0 at
    `total_steps`.

    Args:
      peak_lr: the learning rate after warmup (already scaled, `scaled_learning_rate`).
      warmup_steps: steps of linear warmup (clipped to [0, total_steps]).
      total_steps: the run's length in optimizer steps.

    Returns:
      A `keras.optimizers.schedules.CosineDecay` (step -> float32 learning rate).
    """
    warmup_steps = int(max(0, min(warmup_steps, total_steps)))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_lr,
        decay_steps=max(int(total_steps) - warmup_steps, 1),
        alpha=0.0,
        warmup_target=peak_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
