"""Training curves of one or more runs from their TensorBoard logs, for comparing a
study's runs: loss, contrastive accuracy, kNN / probe accuracy, learning rate.

  python tools/plot_curves.py --runs=runs/a,runs/b --out=curves.png [--labels=A,B]
      [--tags=loss,contrast_acc,knn_acc,probe_acc,learning_rate]

Each tag is a panel; each run a line (per-step batch scalars where the run wrote them,
else per-epoch ones). A tag no run wrote is left out; none found at all is an error.
"""

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import picture_data  # noqa: E402

DEFAULT_TAGS = ["loss", "contrast_acc", "knn_acc", "probe_acc", "learning_rate"]


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from a run's `logs/*/events.out.tfevents.*`."""
    import tensorflow as tf

    scalars = {}
    pattern = os.path.join(run_dir, "logs", "*", "events.out.tfevents.*")
    for path in sorted(glob.glob(pattern)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.string_val:
                    array = tf.make_ndarray(value.tensor)
                    if array.size != 1:
                        continue
                    number = float(array.reshape(()))
                else:
                    continue
                scalars.setdefault(value.tag, []).append((event.step, number))
    return {tag: sorted(points) for tag, points in scalars.items()}


def curve(scalars, tag):
    """The run's points for `tag`: its per-step (`batch_`) series, else per-epoch."""
    for name in (f"batch_{tag}", f"epoch_{tag}", tag):
        if scalars.get(name):
            return name, scalars[name]
    return None, []


def plot(runs, labels, tags, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [read_scalars(r) for r in runs]
    present = [t for t in tags if any(curve(d, t)[1] for d in data)]
    if not present:
        raise ValueError(f"no scalars {tags} in the TensorBoard logs of {runs}")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, tag in zip(axes[0], present):
        for scalars, label in zip(data, labels):
            name, points = curve(scalars, tag)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, marker="." if len(points) < 20 else None)
        ax.set_title(tag)
        ax.set_xlabel("step (epoch for per-epoch scalars)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    picture_data.save_figure(fig, out)
    return present


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="run directories, comma-separated")
    parser.add_argument("--labels", help="one label per run (default: the directory names)")
    parser.add_argument("--tags", default=",".join(DEFAULT_TAGS))
    parser.add_argument("--out", required=True, help="the PNG file to write")
    args = parser.parse_args(argv)
    runs = args.runs.split(",")
    labels = (
        args.labels.split(",") if args.labels else [os.path.basename(r.rstrip("/")) for r in runs]
    )
    if len(labels) != len(runs):
        parser.error(f"{len(labels)} labels for {len(runs)} runs")
    missing = [r for r in runs if not os.path.isdir(os.path.join(r, "logs"))]
    if missing:
        print(f"plot_curves: error: no logs/ in {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        present = plot(runs, labels, args.tags.split(","), args.out)
    except ValueError as error:
        print(f"plot_curves: error: {error}", file=sys.stderr)
        return 2
    print(f"plot_curves: {', '.join(present)} of {len(runs)} run(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
