"""`conv`: each conv's bf16 kernel gradient, TensorFlow's kernel against the patch matmul."""

import sys

from tools.benchmark.common import project_model, real_batch, time_steps
from tools.benchmark.options import FLAGS


def bench_conv():
    """Per distinct conv shape of the encoder: the bf16 kernel gradient by TensorFlow's
    kernel and by the patch matmul, on a real batch's activations and loss gradients."""
    import keras
    import tensorflow as tf

    from simclr_tf import losses
    from simclr_tf.models import conv

    model, _ = project_model("mixed_bfloat16", FLAGS.width, True)
    encoder = model.encoder
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D)]
    probe = keras.Model(
        encoder.input,
        [[l.input for l in convs], [l.output for l in convs], encoder.output["final_avg_pool"]],
    )
    batch = real_batch(FLAGS.batch)
    with tf.GradientTape() as tape:
        ins, outs, h = probe(tf.concat([batch["view1"], batch["view2"]], 0), training=True)
        h1, h2 = tf.split(tf.cast(h, tf.float32), 2)
        loss, _ = losses.nt_xent(h1, h2, temperature=0.5)
    douts = tape.gradient(loss, outs)
    shapes = {}
    for layer, x, dy in zip(convs, ins, douts):
        key = (tuple(x.shape[1:]), layer.kernel.shape, layer.strides[0], layer.padding.upper())
        shapes.setdefault(key, [tf.cast(x, tf.bfloat16), tf.cast(dy, tf.bfloat16), 0])[2] += 1

    def timed(fn):
        return time_steps(lambda: fn().numpy()) * 1e3

    rows = []
    for (in_shape, kernel_shape, strides, padding), (x, dy, count) in shapes.items():
        native = tf.function(
            lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x,
                filter_sizes=kernel_shape,
                out_backprop=dy,
                strides=[1, strides, strides, 1],
                padding=padding,
            )
        )
        matmul = tf.function(lambda: conv.matmul_kernel_grad(x, dy, kernel_shape, strides, padding))
        out_positions = dy.shape[1] * dy.shape[2]
        picks = conv.matmul_kernel_grad_pays(out_positions, kernel_shape[0], in_shape[-1], strides)
        rows.append(
            {
                "impl": "{}x{}x{} -> {}x{}x{}, {}x{} kernel, stride {}".format(
                    *in_shape, *dy.shape[1:], kernel_shape[0], kernel_shape[1], strides
                ),
                "layers": count,
                "native_ms": timed(native),
                "matmul_ms": timed(matmul),
                "rule_picks": "matmul" if picks else "native",
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    chosen = sum(r["layers"] * r[f"{r['rule_picks']}_ms"] for r in rows)
    rows.append(
        {
            "impl": "encoder total (layers x time)",
            "layers": len(convs),
            "native_ms": sum(r["layers"] * r["native_ms"] for r in rows),
            "matmul_ms": sum(r["layers"] * r["matmul_ms"] for r in rows),
            "rule_picks": f"{chosen:.1f} ms with the rule's choices",
        }
    )
    return rows
