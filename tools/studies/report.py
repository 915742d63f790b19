"""A study's table (mean and spread over seeds of every cell) and, for the augmentation
study, the heat map of Fig. 5: linear accuracy of each op alone (diagonal) and of each
pair (off it)."""

import os
import statistics

from tools.studies import grid, runner

METRICS = (("h", "linear_acc"), ("h", "knn_acc"), ("z", "linear_acc"), ("z", "knn_acc"))


def collect(study, seeds, root):
    """[(cell, [result per seed that has one])] in the study's order."""
    rows = []
    for cell in grid.STUDIES[study]:
        results = [runner.read_eval(runner.run_dir(root, cell, seed)) for seed in seeds]
        rows.append((cell, [r for r in results if r is not None]))
    return rows


def values(results, kind, metric):
    return [r[kind][metric] for r in results if kind in r and metric in r[kind]]


def non_finite(results, kind):
    return sum(1 for r in results if r.get(kind, {}).get("non_finite"))


def floor_results(seeds, root):
    """The untrained network's results (runner.run_random_init), per seed that has one."""
    results = [runner.read_eval(runner.random_init_dir(root, s)) for s in seeds]
    return [r for r in results if r is not None]


def mean_spread(numbers):
    """(mean, sample standard deviation or None for one value)."""
    if not numbers:
        return None, None
    spread = statistics.stdev(numbers) if len(numbers) > 1 else None
    return statistics.fmean(numbers), spread


def _format(numbers):
    mean, spread = mean_spread(numbers)
    if mean is None:
        return "-"
    text = f"{mean:.2%}"
    if spread is not None:
        text += f" ± {spread * 100:.2f}"
    return text


def planned_steps(root, cell, seeds):
    """Steps of the cell's `--time_budget` plans (time_budget.json), per seed that has
    one: what the budget bought."""
    from simclr_tf import time_budget

    plans = [time_budget.read_plan(runner.run_dir(root, cell, s)) for s in seeds]
    return [p.steps for p in plans if p is not None]


def table(study, seeds, root):
    """Markdown: one row per cell, each metric as mean ± s.d. (points) over its seeds;
    cells that plan for a time budget also show their planned steps."""
    rows = collect(study, seeds, root)
    steps_of = {cell.key: planned_steps(root, cell, seeds) for cell, _ in rows}
    budgeted = any(steps_of.values())
    header = "| cell | seeds | linear (h) | kNN (h) | linear (z) | kNN (z) | pretrain s |"
    if budgeted:
        header += " steps |"
    lines = [header, "|" + "---|" * (8 if budgeted else 7)]
    for cell, results in rows:
        diverged = sum("diverged" in r for r in results)
        trained = [r for r in results if "diverged" not in r]
        cells = [
            _format(values(trained, kind, metric))
            + (f" ({non_finite(trained, kind)} overflowed)" if non_finite(trained, kind) else "")
            for kind, metric in METRICS
        ]
        seconds = [r["pretrain_s"] for r in trained]
        note = f"{len(trained)}" + (f" (+{diverged} diverged)" if diverged else "")
        time_text = f"{statistics.fmean(seconds):.0f}" if seconds else "-"
        line = f"| {cell.label} | {note} | " + " | ".join(cells) + f" | {time_text} |"
        if budgeted:
            steps = steps_of[cell.key]
            line += (" " + "/".join(str(s) for s in steps) if steps else " -") + " |"
        lines.append(line)
    floor = floor_results(seeds, root)
    if floor:
        cells = [_format(values(floor, kind, metric)) for kind, metric in METRICS]
        lines.append(
            f"| random init (no training) | {len(floor)} | "
            + " | ".join(cells)
            + (" | 0 | 0 |" if budgeted else " | 0 |")
        )
    return "\n".join(lines)


def heatmap_matrix(seeds, root, kind="h", metric="linear_acc"):
    """[op][op] mean accuracy (None where not run) over grid.HEATMAP_OPS."""
    ops = grid.HEATMAP_OPS
    matrix = [[None] * len(ops) for _ in ops]
    for i, a in enumerate(ops):
        for j, b in enumerate(ops):
            pair = (a,) if i == j else tuple(sorted((a, b), key=ops.index))
            cell = grid.augmentation_cell(pair)
            results = [runner.read_eval(runner.run_dir(root, cell, s)) for s in seeds]
            mean, _ = mean_spread(values([r for r in results if r], kind, metric))
            matrix[i][j] = mean
    return matrix


def write_heatmap(seeds, root, out, kind="h", metric="linear_acc"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tools import picture_data

    ops = grid.HEATMAP_OPS
    matrix = heatmap_matrix(seeds, root, kind, metric)
    grid_values = np.array([[np.nan if v is None else v * 100 for v in row] for row in matrix])
    if np.all(np.isnan(grid_values)):
        raise ValueError(f"no augmentation runs under {root}: run the study first")
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    image = ax.imshow(grid_values, cmap="Greens")
    middle = (np.nanmin(grid_values) + np.nanmax(grid_values)) / 2
    for i in range(len(ops)):
        for j in range(len(ops)):
            if not np.isnan(grid_values[i, j]):
                colour = "white" if grid_values[i, j] > middle else "black"
                text = f"{grid_values[i, j]:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=11, color=colour)
    ax.set_xticks(range(len(ops)), ops)
    ax.set_yticks(range(len(ops)), ops)
    ax.set_xlabel("transformation (diagonal: alone)")
    ax.set_ylabel("transformation")
    title = f"{'linear' if metric == 'linear_acc' else 'kNN'} accuracy on {kind} (%)"
    floor_mean, _ = mean_spread(values(floor_results(seeds, root), kind, metric))
    if floor_mean is not None:
        title += f"\nuntrained network: {floor_mean * 100:.1f}"
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    picture_data.save_figure(fig, out)


def write_curves(study, seed, root, out, tags=("loss", "contrast_acc", "learning_rate")):
    """The training curves of the study's runs of one seed (tools/plot_curves.py)."""
    from tools import plot_curves

    runs, labels = [], []
    for cell in grid.STUDIES[study]:
        path = runner.run_dir(root, cell, seed)
        if os.path.isdir(os.path.join(path, "logs")):
            runs.append(path)
            labels.append(cell.label)
    if not runs:
        raise ValueError(f"no {study} runs of seed {seed} under {root}")
    return plot_curves.plot(runs, labels, list(tags), out)
