"""Projection head variants: output widths and parameter counts by formula."""

import numpy as np
import pytest

from simclr_tf.models import heads


def _count(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_variables)


@pytest.mark.parametrize("num_layers", [2, 3])
def test_nonlinear_head_shapes_and_parameters(num_layers):
    d, out = 64, 16
    head = heads.ProjectionHead("nonlinear", num_layers, out)
    outputs = head(np.ones([4, d], np.float32), training=True)
    assert len(outputs) == num_layers + 1 == head.num_outputs
    assert [o.shape[-1] for o in outputs] == [d] * num_layers + [out]
    # hidden: dense d*d + BN gamma/beta; last: dense d*out + BN gamma only (no centre).
    assert _count(head) == (num_layers - 1) * (d * d + 2 * d) + d * out + out


def test_linear_and_none_heads():
    h = np.random.default_rng(0).random([4, 32]).astype(np.float32)
    linear = heads.ProjectionHead("linear", out_dim=8)
    assert linear(h)[-1].shape == (4, 8) and _count(linear) == 32 * 8 + 8
    none = heads.ProjectionHead("none")
    outputs = none(h)
    assert len(outputs) == 1
    np.testing.assert_array_equal(outputs[-1], h)


def test_bad_mode_rejected():
    with pytest.raises(ValueError, match="proj_head_mode"):
        heads.ProjectionHead("mlp")
