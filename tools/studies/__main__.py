"""Command line of tools.studies (see its package docstring)."""

import argparse
import os
import sys

from tools.studies import grid, report, runner


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m tools.studies", description=__doc__)
    parser.add_argument("--study", required=True, choices=sorted(grid.STUDIES))
    parser.add_argument("--seeds", default="0,1", help="comma-separated pretraining seeds")
    parser.add_argument("--root", default="runs/studies", help="where the runs go")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument(
        "--random_init", action="store_true", help="also measure the untrained network"
    )
    parser.add_argument(
        "--only", default="", help="run only the cells whose label contains this text"
    )
    parser.add_argument("--report_only", action="store_true", help="only print the table")
    parser.add_argument("--table_out", help="also write the markdown table here")
    parser.add_argument("--heatmap_out", help="augmentation study: the heat map PNG")
    parser.add_argument("--curves_out", help="training curves of the first seed's runs (PNG)")
    parser.add_argument(
        "--extra_flag",
        action="append",
        default=[],
        help="a simclr_tf.main flag added to every run (repeatable), e.g. "
        "--extra_flag=--train_steps=50 for a quick look",
    )
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be integers, got {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds is empty")
    if args.heatmap_out and args.study != "augmentation":
        parser.error("--heatmap_out is for --study=augmentation")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    root = runner.study_root(os.path.abspath(args.root), args.extra_flag)
    if not args.report_only:
        from simclr_tf.data import open_source
        from tools.studies import evaluate

        # The studies are CIFAR-10's (flags/study_cpu.cfg); TFDS reads it from --data_dir.
        source = open_source("cifar10", args.data_dir, download=args.data_dir is None)
        print("reading the evaluation images once ...", flush=True)
        splits = (evaluate.load_split(source, "train", 32), evaluate.load_split(source, "test", 32))
        try:
            runner.run_study(
                args.study,
                args.seeds,
                root,
                args.data_dir,
                splits,
                source.num_classes,
                args.extra_flag,
                only=args.only,
            )
        except RuntimeError as error:  # a pretraining that failed (its log is named)
            sys.exit(f"tools.studies: error: {error}")
        if args.random_init:
            runner.run_random_init(args.seeds, root, splits, source.num_classes, args.extra_flag)
    text = report.table(args.study, args.seeds, root)
    print(text)
    if args.table_out:
        with open(args.table_out, "w") as f:
            f.write(text + "\n")
    if args.heatmap_out:
        report.write_heatmap(args.seeds, root, args.heatmap_out)
        print(f"wrote {args.heatmap_out}")
    if args.curves_out:
        report.write_curves(args.study, args.seeds[0], root, args.curves_out)
        print(f"wrote {args.curves_out}")


if __name__ == "__main__":
    main()
