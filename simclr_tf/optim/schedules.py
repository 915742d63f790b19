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


class PlannedWarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_cosine` whose length can be set while the run goes on (`--time_budget`).

    Until `replan`, it is the warmup + cosine formula above over `total_steps`. `replan`
    at step s keeps the learning rate where it is at s and continues from there: during
    warmup, a linear ramp from the current value to the peak at the (new) warmup end;
    after it, the cosine's phase goes on from its current value to pi at the new total,
    so the rate reaches 0 exactly at the last step either way. The length lives in
    variables the compiled step reads, so no retracing is needed.
    """

    def __init__(self, peak_lr, warmup_steps, total_steps):
        import tensorflow as tf

        self.peak_lr = float(peak_lr)
        total_steps = max(int(total_steps), 1)
        warmup_steps = int(max(0, min(warmup_steps, total_steps)))

        def variable(name, value):
            return tf.Variable(float(value), trainable=False, dtype=tf.float32, name=name)

        self.total = variable("schedule_total_steps", total_steps)
        self.warmup = variable("schedule_warmup_steps", warmup_steps)
        self.anchor_step = variable("schedule_anchor_step", 0)
        self.anchor_fraction = variable("schedule_anchor_fraction", 0)  # of peak, in warmup
        self.anchor_phase = variable("schedule_anchor_phase", 0)  # of the cosine, after

    @staticmethod
    def _fraction(t, total, warmup, a, fa, pa):
        """The learning rate as a share of the peak at step t."""
        ops = keras.ops
        warm = fa + (1 - fa) * (t - a) / ops.maximum(warmup - a, 1e-9)
        start = ops.maximum(warmup, a)
        phase = pa + (1 - pa) * (t - start) / ops.maximum(total - start, 1.0)
        phase = ops.where(t >= total, 1.0, phase)  # 0 at the end, whatever the warmup
        cosine = 0.5 * (1 + ops.cos(math.pi * ops.clip(phase, 0.0, 1.0)))
        return ops.where(t < warmup, warm, cosine)

    def __call__(self, step):
        t = keras.ops.cast(step, "float32")
        f = self._fraction(
            t, self.total, self.warmup, self.anchor_step, self.anchor_fraction, self.anchor_phase
        )
        return self.peak_lr * f

    def state(self):
        return {
            name: float(getattr(self, name).numpy())
            for name in ("total", "warmup", "anchor_step", "anchor_fraction", "anchor_phase")
        }

    def restore(self, state):
        for name, value in state.items():
            getattr(self, name).assign(value)

    def replan(self, step, total_steps, warmup_steps=None, keep_slope=True):
        """Sets the length to `total_steps` from `step` on, the rate continuous at `step`
        (`warmup_steps` moves the warmup's end only while it has not been reached; with
        `keep_slope` the ramp left may shorten to half, never more: a re-plan never
        makes warmup more than twice as steep. The first plan replaces a provisional
        warmup, so it may)."""
        s = self.state()
        t = float(step)
        if t < s["warmup"]:
            fraction = float(
                self._fraction(
                    t,
                    s["total"],
                    s["warmup"],
                    s["anchor_step"],
                    s["anchor_fraction"],
                    s["anchor_phase"],
                )
            )
            warmup = s["warmup"] if warmup_steps is None else float(warmup_steps)
            if keep_slope:
                warmup = max(warmup, t + 0.5 * (s["warmup"] - t))
            warmup = max(warmup, t + 1)
            new = dict(anchor_step=t, anchor_fraction=fraction, anchor_phase=0.0)
            new.update(warmup=min(warmup, float(total_steps)))
        else:
            start = max(s["warmup"], s["anchor_step"])
            phase = s["anchor_phase"] + (1 - s["anchor_phase"]) * (t - start) / max(
                s["total"] - start, 1.0
            )
            new = dict(anchor_step=t, anchor_phase=min(max(phase, 0.0), 1.0))
        new["total"] = float(max(total_steps, step))
        self.restore(new)

    def get_config(self):
        return {"peak_lr": self.peak_lr, **self.state()}
