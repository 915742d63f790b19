"""simclr_tf's pretraining step against three steps of google-research/simclr's `tf2/`
code (shared/data/reference_training): `tools/check_reference_step.py` holds on the
shared fixture with the CIFAR ResNet-18 recipe's flags, and fails where a setting
trains differently from the reference."""

import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_TFDS

FIXTURE = pathlib.Path(SHARED_TFDS).parent / "reference_training" / "tf2_r18_seed1"
RECIPE = "--flagfile=flags/cifar10_r18_pretrain.cfg"
STEPS = 3


def _check(*flags):
    result = subprocess.run(
        [sys.executable, "tools/check_reference_step.py", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = result.stdout.splitlines()
    return result.returncode, lines, result.stderr


@pytest.fixture(scope="module")
def recipe_run():
    return _check(f"--fixture={FIXTURE}", RECIPE)


def test_the_recipe_trains_exactly_like_the_reference(recipe_run):
    code, lines, stderr = recipe_run
    failed = [l for l in lines if l.startswith("FAIL")]
    assert code == 0 and not failed, (failed, stderr[-2000:])
    ok = [l for l in lines if l.startswith("ok ")]
    # Every kind of check ran for every step: 6 scalars, 2 accuracies, 4 forward
    # outputs, gradients, variables and update norms; then the momentum and the
    # conversion of all 121 variables.
    for step in range(1, STEPS + 1):
        for what in (
            "learning_rate",
            "contrast_loss",
            "contrast_entropy",
            "supervised_loss",
            "weight_decay",
            "total_loss",
            "contrast_acc",
            "supervised_acc",
            "forward hiddens",
            "forward proj_head_output",
            "forward logits_sup",
            "forward logits_con_ab",
            f"gradients g{step}",
            f"variables w{step}",
            "update norms",
        ):
            assert any(l.startswith(f"ok   step {step} {what}") for l in ok), (step, what)
    assert any("momentum after step 3" in l for l in ok)
    assert any(l.startswith("ok   121 of 121 reference variables") for l in ok)
    assert lines[-1] == f"check_reference_step: {len(ok)} of {len(ok)} checks hold"


def test_decoupled_weight_decay_is_caught_as_a_difference():
    """The reference adds an L2 term on the supervised head's kernel to the loss; the
    decoupled mode does not, so every step's weight-decay term differs and the tool
    says so. (Its gradient, 1e-4 w with |w| ~ 1e-2, is ~1e-5 of the probe's gradient:
    below the gradient tolerance, so only the term itself shows; the scalar checks need
    no perturbed runs.)"""
    code, lines, _ = _check(
        f"--fixture={FIXTURE}", RECIPE, "--weight_decay_mode=decoupled", "--perturbed_runs=0"
    )
    failed = [l for l in lines if l.startswith("FAIL")]
    assert code == 1
    for step in range(1, STEPS + 1):
        assert any(l.startswith(f"FAIL step {step} weight_decay: 0 vs") for l in failed), failed
    held, total = (int(x) for x in lines[-1].split(": ")[1].split(" checks")[0].split(" of "))
    assert held == total - len(failed)


def test_a_folder_that_is_no_fixture_fails_in_one_line(tmp_path):
    code, lines, stderr = _check(f"--fixture={tmp_path}")
    assert code == 2
    errors = [l for l in stderr.splitlines() if l.startswith("check_reference_step: error:")]
    assert len(errors) == 1 and "not a readable fixture" in errors[0]
    assert "Traceback" not in stderr


_SPREAD_PROBE = r"""
import sys
sys.argv = ["x"]
import check_reference_step as c
import numpy as np
import tensorflow as tf
from types import SimpleNamespace

# restart: every nonzero trainable value moves exactly one float32 spacing, zeros stay,
# non-trainable values and the optimizer's state go back to the start.
w = tf.Variable(np.array([1.0, -3.0, 0.0, 1e-30], np.float32))
stat = tf.Variable(np.array([5.0], np.float32), trainable=False)
slot = tf.Variable(np.array([7.0], np.float32))
model = SimpleNamespace(
    variables=[w, stat], trainable_variables=[w], optimizer=SimpleNamespace(variables=[slot])
)
start = [np.array([1.0, -3.0, 0.0, 1e-30], np.float32), np.array([4.0], np.float32)]
c.restart(model, start, perturb_seed=3)
new, old = w.numpy()[[0, 1, 3]], start[0][[0, 1, 3]]
# Adjacent float32 values: different, and the next float32 from the old toward the new
# is the new one.
assert np.all(new != old) and np.array_equal(np.nextafter(old, new), new), (old, new)
assert w.numpy()[2] == 0 and stat.numpy()[0] == 4.0 and slot.numpy()[0] == 0.0

# A difference is excused only up to SPREAD_FACTOR x what rounding moved our own run.
ref = np.array([1.0, 2.0, 3.0])
mine = ref + np.array([0.0, 0.3, 0.0])
assert abs(c._beyond_spread(mine, ref, np.zeros(3))[1] - 0.3) < 1e-12
assert c._beyond_spread(mine, ref, np.full(3, 0.3 / c.SPREAD_FACTOR)).max() == 0.0
left = c._beyond_spread(mine, ref, np.full(3, 0.1)).max()
assert abs(left - (0.3 - 0.1 * c.SPREAD_FACTOR)) < 1e-12
print("probe ok")
"""


def test_rounding_spread_excuses_only_what_rounding_moves():
    """The perturbed runs start one float32 spacing away (nothing else changes), and a
    difference counts only beyond SPREAD_FACTOR x the spread they measured."""
    result = subprocess.run(
        [sys.executable, "-c", _SPREAD_PROBE],
        cwd=REPO / "tools",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "probe ok" in result.stdout, result.stderr[-3000:]
