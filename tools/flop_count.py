"""FLOPs of a network, counted on its layers (no flags: any tool may import it)."""


def forward_flops(encoder):
    """Multiply-adds x 2 of the convolutions and dense layers, per image."""
    import keras

    from simclr_tf import keras_compat

    total = 0
    for layer in keras_compat.all_sublayers(encoder):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape if hasattr(layer, "output") else (0, 0, 0, 0)
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total
