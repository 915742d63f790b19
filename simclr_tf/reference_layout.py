"""The reference implementation's checkpoints as plain lists: which stored tensor is
which layer, in the order google-research/simclr creates its layers.

Both of its formats are read into one `Layout` without loading any values:
- TF1 (the released checkpoints, `model.ckpt-NNNN`): `base_model/conv2d[_N]/kernel` and
  `base_model/batch_normalization[_N]/*`, where N counts layers in creation order;
  `head_contrastive/nl_J/...`; `head_supervised/linear_layer/dense/...`.
- TF2 (written by its `tf2/` code with `tf.train.Checkpoint`): the same layers under
  object paths such as `model/resnet_model/block_groups/0/layers/0/...`, put in the
  same creation order here.

`conv_shapes` describes the reference ResNet's convolutions from its settings, so a
layout's architecture is found by matching, and simclr_tf's own ResNet is tested
against the same description.
"""

import dataclasses
import re

from simclr_tf.config import RESNET_DEPTHS

BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")
BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
SK_MIN_DIM = 32
# Stored alongside the weights and deliberately not converted, by kind.
SKIPPED_KINDS = {
    "step counters": (
        re.compile(r"(^|/)global_step$"),
        re.compile(r"^(save_counter|_CHECKPOINTABLE_OBJECT_GRAPH)$"),
    ),
    "optimizer slots": (
        re.compile(r"/Momentum$"),  # TF1 LARS / momentum slots
        re.compile(r"(^|/)LARSOptimizer"),
        re.compile(r"\.OPTIMIZER_SLOT/"),  # TF2 slots
        re.compile(r"^optimizer/"),
    ),
    # The released v2 files' exponential-moving-average copy of the weights.
    "ema_model weights (moving averages, not converted)": (re.compile(r"^ema_model/"),),
}
SKIPPED = tuple(p for patterns in SKIPPED_KINDS.values() for p in patterns)
_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# TF2 block attributes: the shortcut's layers are created before the residual branch's
# (bottleneck blocks: projection_layers, conv_relu_dropblock_layers; basic blocks:
# shortcut_layers, conv2d_bn_layers).
_TF2_BLOCK_SECTIONS = {
    "projection_layers": 0,
    "shortcut_layers": 0,
    "conv_relu_dropblock_layers": 1,
    "conv2d_bn_layers": 1,
}
# TF2 selective-kernel layer: its tensors in the order the TF1 code creates them.
_TF2_SK_ORDER = {
    "conv2d_fixed_padding": 0,
    "batch_norm_relu": 1,
    "conv2d_0": 2,
    "batch_norm_relu_1": 3,
    "conv2d_1": 4,
}


def skipped_kinds(keys):
    """{kind: count} of skipped checkpoint keys (`SKIPPED_KINDS`)."""
    counts = {}
    for key in keys:
        path = key.removesuffix(_TF2_SUFFIX)
        kind = next(k for k, ps in SKIPPED_KINDS.items() if any(p.search(path) for p in ps))
        counts[kind] = counts.get(kind, 0) + 1
    return counts


class LayoutError(ValueError):
    """The checkpoint is not one the reference code writes, in one line."""


@dataclasses.dataclass
class Layout:
    """Checkpoint keys by role; `shapes` maps every key to its shape."""

    format: str
    convs: list  # encoder conv kernels, creation order
    bns: list  # encoder BNs, creation order: {field: key} (beta may be absent)
    head: list  # projection-head layers: {"kernel": key, "bn": {field: key}}
    supervised: dict | None  # {"kernel": key, "bias": key}
    skipped: list
    shapes: dict

    @property
    def mapped(self):
        keys = list(self.convs) + [k for bn in self.bns for k in bn.values()]
        for layer in self.head:
            keys += [layer["kernel"], *layer["bn"].values()]
        return keys + list((self.supervised or {}).values())


def _index(suffix):
    return int(suffix[1:]) if suffix else 0


def _tf1(shapes, skipped, unknown):
    convs, bns, head, supervised = {}, {}, {}, {}
    for key in shapes:
        if m := re.fullmatch(r"base_model/conv2d(_\d+)?/kernel", key):
            convs[_index(m.group(1))] = key
        elif m := re.fullmatch(r"base_model/batch_normalization(_\d+)?/(\w+)", key):
            bns.setdefault(_index(m.group(1)), {})[m.group(2)] = key
        elif m := re.fullmatch(r"head_contrastive/nl_(\d+)/dense/kernel", key):
            head.setdefault(int(m.group(1)), {"bn": {}})["kernel"] = key
        elif m := re.fullmatch(r"head_contrastive/nl_(\d+)/batch_normalization/(\w+)", key):
            head.setdefault(int(m.group(1)), {"bn": {}})["bn"][m.group(2)] = key
        elif m := re.fullmatch(r"head_supervised/linear_layer/dense/(kernel|bias)", key):
            supervised[m.group(1)] = key
        else:
            unknown.append(key)
    return convs, bns, head, supervised


def _tf2_order(path):
    """Sort key of an encoder tensor's path below `model/resnet_model/`."""
    parts = path.split("/")
    if parts[0] == "initial_conv_relu_max_pool":
        return (0, int(parts[1]), 0, 0, 0)
    if parts[0] == "block_groups" and parts[4] in _TF2_BLOCK_SECTIONS:
        section = _TF2_BLOCK_SECTIONS[parts[4]]
        sub = _TF2_SK_ORDER.get(parts[6], 0) if len(parts) > 7 else 0
        return (1 + int(parts[1]), int(parts[3]), section, int(parts[5]), sub)
    raise KeyError(path)


def _tf2(shapes, skipped, unknown):
    encoder, head, supervised = [], {}, {}
    for key in shapes:
        path = key[: -len(_TF2_SUFFIX)] if key.endswith(_TF2_SUFFIX) else key
        if path.startswith("model/resnet_model/"):
            inner = path[len("model/resnet_model/") :]
            try:
                encoder.append((_tf2_order(inner), inner, key))
            except (KeyError, IndexError, ValueError):
                unknown.append(key)
        elif m := re.fullmatch(r"model/_projection_head/linear_layers/(\d+)/dense/kernel", path):
            head.setdefault(int(m.group(1)), {"bn": {}})["kernel"] = key
        elif m := re.fullmatch(
            r"model/_projection_head/linear_layers/(\d+)/bn_relu/bn/(\w+)", path
        ):
            head.setdefault(int(m.group(1)), {"bn": {}})["bn"][m.group(2)] = key
        elif m := re.fullmatch(r"model/supervised_head/linear_layer/dense/(kernel|bias)", path):
            supervised[m.group(1)] = key
        else:
            unknown.append(key)
    convs, bns = {}, {}
    bn_groups = {}
    for order, inner, key in sorted(encoder):
        field = inner.rsplit("/", 1)[1]
        if field == "kernel":
            convs[len(convs)] = key
        elif field in BN_FIELDS:
            bn_groups.setdefault(order, {})[field] = key
        else:
            unknown.append(key)
    for i, order in enumerate(sorted(bn_groups)):
        bns[i] = bn_groups[order]
    return convs, bns, head, supervised


def read_layout(shapes):
    """The roles of a reference checkpoint's tensors.

    Args:
      shapes: {key: shape} of every stored tensor (`tf.train.list_variables`, or a
        manifest).

    Returns:
      A `Layout`.

    Raises:
      LayoutError: keys that are neither weights nor deliberately skipped, or gaps
        in the layer numbering.
    """
    shapes = {k: list(v) for k, v in shapes.items()}
    skipped = sorted(
        k for k in shapes if any(p.search(k.removesuffix(_TF2_SUFFIX)) for p in SKIPPED)
    )
    kept = {k: v for k, v in shapes.items() if k not in set(skipped)}
    unknown = []
    if any(k.startswith("base_model/") for k in kept):
        fmt, parts = "tf1", _tf1(kept, skipped, unknown)
    elif any(k.startswith("model/resnet_model/") for k in kept):
        fmt, parts = "tf2", _tf2(kept, skipped, unknown)
    else:
        raise LayoutError(
            "no base_model/ (TF1) or model/resnet_model/ (TF2) weights: "
            "not a checkpoint of the reference SimCLR code"
        )
    if unknown:
        raise LayoutError(
            f"{len(unknown)} tensors are neither weights nor optimizer/step "
            f"state (first: {sorted(unknown)[0]})"
        )
    convs, bns, head, supervised = parts
    for what, found in (("conv", convs), ("batch norm", bns), ("head layer", head)):
        if sorted(found) != list(range(len(found))):
            raise LayoutError(f"{fmt}: the {what} numbering has gaps")
    for i, layer in head.items():
        if "kernel" not in layer:
            raise LayoutError(f"{fmt}: projection-head layer {i} has no dense kernel")
    if supervised and set(supervised) != {"kernel", "bias"}:
        raise LayoutError(f"{fmt}: the supervised head lacks its kernel or bias")
    return Layout(
        fmt,
        [convs[i] for i in range(len(convs))],
        [bns[i] for i in range(len(bns))],
        [head[i] for i in range(len(head))],
        supervised or None,
        skipped,
        shapes,
    )


def conv_shapes(depth, width_multiplier, sk_ratio=0.0, cifar_stem=False):
    """The reference ResNet's conv kernel shapes (HWIO) in creation order.

    Its blocks create the projection shortcut first, in the first block of every group
    (block_group1 included); with sk_ratio > 0 the stem is ResNet-D's three 3x3 convs
    (unless it is the CIFAR stem), shortcuts average-pool before their 1x1 conv (no
    weights change), and each bottleneck's 3x3 conv is a selective kernel: one 3x3
    conv with both branches (2f outputs), a 1x1 "fc" conv to max(f * sk_ratio, 32) and
    a 1x1 mixing conv back to 2f. Basic blocks (ResNet-18/34) keep plain 3x3 convs.
    """
    if depth not in BLOCKS:
        raise ValueError(f"depth must be one of {RESNET_DEPTHS}")
    bottleneck = depth >= 50
    w = int(width_multiplier)
    shapes = []
    if cifar_stem:
        shapes.append([3, 3, 3, 64 * w])
    elif sk_ratio > 0:
        shapes += [[3, 3, 3, 32 * w], [3, 3, 32 * w, 32 * w], [3, 3, 32 * w, 64 * w]]
    else:
        shapes.append([7, 7, 3, 64 * w])
    channels = 64 * w
    for group, count in enumerate(BLOCKS[depth]):
        f = 64 * w * 2**group
        out = 4 * f if bottleneck else f
        for block in range(count):
            if block == 0:
                shapes.append([1, 1, channels, out])
            if bottleneck:
                shapes.append([1, 1, channels, f])
                if sk_ratio > 0:
                    mid = max(int(f * sk_ratio), SK_MIN_DIM)
                    shapes += [[3, 3, f, 2 * f], [1, 1, f, mid], [1, 1, mid, 2 * f]]
                else:
                    shapes.append([3, 3, f, f])
                shapes.append([1, 1, f, out])
            else:
                shapes += [[3, 3, channels, f], [3, 3, f, f]]
            channels = out
    return shapes


def infer_architecture(layout, sk_ratio=None):
    """(depth, width_multiplier, sk_ratio, cifar_stem) of the encoder in `layout`.

    Args:
      layout: a `Layout`.
      sk_ratio: the selective-kernel ratio, where the checkpoint cannot tell it (its
        "fc" convs are 32 wide whenever f * sk_ratio < 32). Default: the largest
        ratio the widths show, else SimCLRv2's 0.0625.

    Raises:
      LayoutError: no reference ResNet has these conv shapes.
    """
    found = [layout.shapes[k] for k in layout.convs]
    if not found or len(found[0]) != 4 or found[0][2] != 3:
        raise LayoutError("the first conv is not an RGB stem")
    kh, _, _, stem_out = found[0]
    for depth in BLOCKS:
        # An explicit ratio > 0 is tried first: a CIFAR-stem ResNet-18/34 with
        # selective-kernel settings has exactly the shapes of one without.
        candidates = [(kh == 3, False), (False, True), (True, True)]
        if sk_ratio:
            candidates = candidates[1:] + candidates[:1]
        for cifar_stem, sk in candidates:
            width = stem_out // (32 if sk and not cifar_stem else 64)
            ratio = 0.0
            if sk:
                ratio = sk_ratio if sk_ratio is not None else _sk_ratio(found, width)
                if ratio <= 0:
                    continue
            if width >= 1 and conv_shapes(depth, width, ratio, cifar_stem) == found:
                return depth, float(width), ratio, cifar_stem
    raise LayoutError(
        f"no reference ResNet has these {len(found)} conv shapes (first "
        f"{found[0]}); depths tried: {sorted(BLOCKS)}"
    )


def _sk_ratio(shapes, width):
    """The ratio the fc convs show ([1, 1, f, mid] after a [3, 3, f, 2f] conv)."""
    ratios = [
        b[3] / b[2]
        for a, b in zip(shapes, shapes[1:])
        if a[:2] == [3, 3]
        and a[3] == 2 * a[2]
        and b[:2] == [1, 1]
        and b[2] == a[2]
        and b[3] > SK_MIN_DIM
    ]
    return max(ratios) if ratios else 0.0625
