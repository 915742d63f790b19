"""Scaling on paper: what SimCLR pretraining at a large global batch costs each replica
in contrastive-logits memory and communication, and the communication's share of a
step on a stated interconnect.

  python tools/scaling_model.py [--depth=50 --width=1 --batch=4096 --replicas=8,32,128
      --image_size=224 --num_proj_layers=2 --bus_gbps=230,23 --replica_tflops=125]

The model's parameters and forward FLOPs are counted on the real network (built here on
the CPU), not quoted. Per step and replica, with n = batch / replicas local images:
- logits: NT-Xent's [2n, 2N] float32 similarities; held one block of 1024 anchor rows at
  a time (simclr_tf.losses.BLOCK_ROWS), or whole for the ablation losses; the global
  2N x 2N matrix is never on one replica.
- all-gather: every replica receives the other replicas' z (2N x d float32) forward and
  exchanges the same volume back as the gather's gradient (a reduce-scatter).
- gradient all-reduce: float32 gradients of every trainable variable, ring all-reduce:
  2 (R - 1) / R of their bytes sent and received per replica.
Time = bytes / bus bandwidth (NCCL's "bus bandwidth": DGX A100 NVLink about 230 GB/s,
one 200 Gb/s InfiniBand port per GPU about 23 GB/s); compute = 3 x forward FLOPs (forward
and backward) x 2n views / --replica_tflops sustained. The share assumes no overlap of
communication with compute, so it is an upper bound.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIB = 2.0**20
FLOAT32 = 4


def model_counts(depth, width, image_size, proj_out_dim=128, num_proj_layers=2):
    """(trainable parameters, forward FLOPs per image) of encoder + projection head."""
    from simclr_tf.config import Config, DataConfig, ModelConfig
    from simclr_tf.models import builders
    from tools.flop_count import forward_flops

    config = Config(
        data=DataConfig(image_size=image_size),
        model=ModelConfig(
            depth=depth,
            width_multiplier=width,
            proj_out_dim=proj_out_dim,
            num_proj_layers=num_proj_layers,
        ),
    )
    model = builders.pretrain_model(config, num_classes=0)
    params = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
    return params, forward_flops(model.encoder)


def rows(params, flops, batch, replicas, proj_out_dim, bus_gbps, replica_tflops, block=1024):
    """One dict per replica count: memory (MiB), bytes and seconds per step."""
    out = []
    for r in replicas:
        n = batch // r
        logits_whole = 2 * n * 2 * batch * FLOAT32
        logits_block = min(2 * n, block) * 2 * batch * FLOAT32
        gather = 2 * (r - 1) / r * 2 * batch * proj_out_dim * FLOAT32  # forward + backward
        allreduce = 2 * (r - 1) / r * params * FLOAT32
        compute_s = 3 * flops * 2 * n / (replica_tflops * 1e12)
        row = {
            "replicas": r,
            "per_replica_batch": n,
            "logits_block_mib": logits_block / MIB,
            "logits_whole_mib": logits_whole / MIB,
            "global_matrix_mib": (2 * batch) ** 2 * FLOAT32 / MIB,
            "all_gather_mib": gather / MIB,
            "grad_allreduce_mib": allreduce / MIB,
            "compute_ms": 1e3 * compute_s,
        }
        for bw in bus_gbps:
            comm_s = (gather + allreduce) / (bw * 1e9)
            row[f"comm_ms@{bw:g}GB/s"] = 1e3 * comm_s
            row[f"comm_share@{bw:g}GB/s"] = comm_s / (comm_s + compute_s)
        out.append(row)
    return out


def markdown(table):
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in table:
        cells = [
            f"{row[k]:.1%}"
            if "share" in k
            else f"{row[k]:.1f}"
            if isinstance(row[k], float)
            else str(row[k])
            for k in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ints(text):
    return [int(x) for x in text.split(",")]


def _floats(text):
    return [float(x) for x in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4096, help="global batch (images)")
    parser.add_argument("--replicas", type=_ints, default=[8, 32, 128])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--proj_out_dim", type=int, default=128)
    parser.add_argument(
        "--num_proj_layers", type=int, default=2, help="2: flags/imagenet_r50_pretrain.cfg"
    )
    parser.add_argument("--bus_gbps", type=_floats, default=[230.0, 23.0])
    parser.add_argument("--replica_tflops", type=float, default=125.0)
    args = parser.parse_args(argv)
    bad = [r for r in args.replicas if r < 1 or args.batch % r]
    if bad:
        parser.error(f"--batch {args.batch} does not divide over {bad} replicas")
    params, flops = model_counts(
        args.depth, args.width, args.image_size, args.proj_out_dim, args.num_proj_layers
    )
    print(
        f"ResNet-{args.depth} {args.width:g}x at {args.image_size} px + projection head: "
        f"{params / 1e6:.1f} M trainable parameters, {flops / 1e9:.2f} GFLOP forward per "
        f"image; global batch {args.batch}; {args.replica_tflops:g} TFLOP/s per replica"
    )
    table = rows(
        params,
        flops,
        args.batch,
        args.replicas,
        args.proj_out_dim,
        args.bus_gbps,
        args.replica_tflops,
    )
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
