"""Converts a checkpoint written by google-research/simclr (TF1 `model.ckpt-NNNN`, as
released, or TF2 `ckpt-N` from its `tf2/` code) into a simclr_tf run directory.

  python tools/convert_checkpoint.py --input=r50_1x_sk1/model.ckpt-250228 \\
      --output_dir=runs/r50_1x_sk1 --image_size=224

The architecture is read from the checkpoint; --depth, --width_multiplier, --sk_ratio
and --cifar_stem override what it shows. The run directory then works as
`--init_checkpoint` (linear eval, fine-tuning) and with `--mode=export --model_dir`.
Exit code 2 with a one-line reason when the checkpoint cannot be converted.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Checkpoint prefix, or a directory holding one.")
flags.DEFINE_string("output_dir", None, "The simclr_tf run directory to write.")
flags.DEFINE_integer(
    "image_size",
    None,
    "Input side the run is exported for (the "
    "checkpoint cannot say; default 32 for the CIFAR stem, else 224).",
)
flags.DEFINE_float(
    "sk_ratio",
    None,
    "Selective-kernel ratio where the checkpoint cannot "
    "tell it (default: what its widths show, else 0.0625).",
)
flags.DEFINE_integer("depth", None, "Override the inferred ResNet depth.")
flags.DEFINE_float("width_multiplier", None, "Override the inferred width.")
flags.DEFINE_bool("cifar_stem", None, "Override the inferred stem.")
flags.mark_flags_as_required(["input", "output_dir"])


def main(argv):
    del argv
    from simclr_tf import convert, reference_layout

    overrides = {
        k: getattr(FLAGS, k)
        for k in ("depth", "width_multiplier", "cifar_stem")
        if getattr(FLAGS, k) is not None
    }
    try:
        report = convert.convert(
            FLAGS.input, FLAGS.output_dir, FLAGS.image_size, FLAGS.sk_ratio, **overrides
        )
    except (FileNotFoundError, reference_layout.LayoutError, convert.ConversionError) as error:
        print(f"convert_checkpoint: error: {error}", file=sys.stderr)
        return 2
    arch = report["architecture"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in report["skipped_kinds"].items())
    print(
        f"convert_checkpoint: {report['format']} checkpoint {report['source']}: "
        f"ResNet-{arch['depth']} {arch['width_multiplier']:g}x sk_ratio "
        f"{arch['sk_ratio']:g}, {'CIFAR' if arch['cifar_stem'] else 'ImageNet'} stem, "
        f"{arch['num_proj_layers'] if arch['proj_head_mode'] != 'none' else 0}-layer "
        f"projection head, supervised head of {report['supervised_classes']} classes"
    )
    print(
        f"convert_checkpoint: {report['mapped_tensors']} tensors "
        f"({report['mapped_values']:,} values) converted; {report['skipped_tensors']} "
        f"skipped ({kinds or 'none'}; listed in "
        f"{os.path.join(FLAGS.output_dir, 'conversion.json')})"
    )
    print(f"convert_checkpoint: wrote {report['checkpoint']}")
    return 0


if __name__ == "__main__":
    app.run(main)
