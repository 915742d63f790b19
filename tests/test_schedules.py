"""Warmup + cosine schedule and batch-size scaling against the closed-form formulas."""

import math

import numpy as np
import pytest

from simclr_tf.optim import schedules


def test_scaling_rules():
    assert schedules.scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(0.3 * 16)
    assert schedules.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert schedules.scaled_learning_rate(0.5, 512, "none") == 0.5
    with pytest.raises(ValueError):
        schedules.scaled_learning_rate(0.1, 256, "cubic")


def test_warmup_then_cosine_to_zero():
    peak, warmup, total = 2.0, 10, 110
    schedule = schedules.warmup_cosine(peak, warmup, total)
    for step in [0, 1, 5, 10, 11, 50, 100, 109, 110]:
        if step < warmup:
            expected = peak * step / warmup
        else:
            expected = 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-5), step
    assert float(schedule(total + 50)) == pytest.approx(0.0, abs=1e-6)


def test_no_warmup_starts_at_peak():
    schedule = schedules.warmup_cosine(1.0, 0, 100)
    assert float(schedule(0)) == pytest.approx(1.0)
    assert np.isclose(float(schedule(50)), 0.5, atol=1e-5)
