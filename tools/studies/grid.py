"""The studies and their cells: each cell is a set of `simclr_tf.main` flags on top of
`flags/study_cpu.cfg`. Cells with the same flags are the same runs, shared between
studies (the base recipe appears in several)."""

import dataclasses

BASE_FLAGFILE = "flags/study_cpu.cfg"

# The augmentation families of the paper's Fig. 5, as flags. "crop" is the random
# resized crop with its horizontal flip; "colour" is colour jitter (p 0.8) with random
# grayscale (p 0.2), as the paper's colour distortion.
CROP_OFF = {"crop": "false", "flip": "false"}
COLOUR_OFF = {"color_jitter_prob": "0", "grayscale_prob": "0"}
OPS_ON = {
    "blur": {"blur_prob": "0.5"},
    "cutout": {"cutout_prob": "0.5"},
    "rotate": {"rotation_prob": "0.5"},
    "sobel": {"sobel_prob": "0.5"},
    "noise": {"noise_prob": "0.5"},
}


@dataclasses.dataclass(frozen=True)
class Cell:
    label: str
    flags: tuple  # ((name, value), ...), sorted

    @property
    def key(self):
        """The cell's directory name: its flags, so equal cells share their runs."""
        return ",".join(f"{k}={v}" for k, v in self.flags) or "base"


def cell(label, **flags):
    return Cell(label, tuple(sorted((k, str(v)) for k, v in flags.items())))


def augmentation_cell(ops):
    """Only the named ops of {crop, colour, blur, cutout, rotate, sobel, noise}."""
    flags = {}
    if "crop" not in ops:
        flags.update(CROP_OFF)
    if "colour" not in ops:
        flags.update(COLOUR_OFF)
    for op in ops:
        if op not in ("crop", "colour"):
            flags.update(OPS_ON[op])
    return cell(" + ".join(ops), **flags)


# The heat map's ops (Fig. 5's layout: one op on the diagonal, a pair off it).
HEATMAP_OPS = ("crop", "colour", "cutout")


def _augmentation():
    cells = [augmentation_cell((op,)) for op in HEATMAP_OPS]
    for i, a in enumerate(HEATMAP_OPS):
        for b in HEATMAP_OPS[i + 1 :]:
            cells.append(augmentation_cell((a, b)))
    cells.append(augmentation_cell(("crop", "rotate")))
    cells.append(augmentation_cell(("crop", "colour", "blur")))
    return cells


def _budget(budget):
    return {"time_budget": budget, "checkpoint_steps": 200}


def recipe_cell(budget):
    """flags/cifar10_cpu<minutes>.cfg as a cell (a test holds the two equal): the
    winners of the search, with the run's own final kNN evaluation inside the budget."""
    return cell(
        f"recipe (flags/cifar10_cpu{budget[:-1]}.cfg)",
        temperature=0.2,
        view_size=24,
        eval_split="test",
        **_budget(budget),
    )


def _budget_cells(budget):
    """The settings that matter at a small budget, one change from the base at a time,
    then the recipe that combines the winners."""
    b = _budget(budget)
    return [
        cell("base (study_cpu)", **b),
        cell("temperature 0.2", temperature=0.2, **b),
        cell("views 24 px", view_size=24, **b),
        cell("batch 128 (lr 0.5, linear scaling)", batch_size=128, **b),
        recipe_cell(budget),
    ]


STUDIES = {
    # Paper Fig. 5 (a subset) and its heat map.
    "augmentation": _augmentation(),
    # Paper Table 1: colour distortion strength s (crop + colour, the CIFAR recipe's 0.5).
    "colour_strength": [
        cell("s = 0.25", color_jitter_strength=0.25),
        cell("s = 0.5"),
        cell("s = 1.0", color_jitter_strength=1.0),
    ],
    # Paper Fig. 8 / section 4.2: the projection head (every run is also read at h and z;
    # "nonlinear" is SimCLRv2's 3-layer head, the base recipe's).
    "projection_head": [
        cell("none", proj_head_mode="none"),
        cell("linear", proj_head_mode="linear"),
        cell("nonlinear"),
        # SimCLR v1's head: one hidden layer (the base recipe has SimCLRv2's two).
        cell("nonlinear, 2 layers (v1)", num_proj_layers=2),
    ],
    # Paper Tables 2 and 5: the loss, temperature and L2 normalisation.
    "loss_temperature": [
        cell("NT-Xent, tau 0.1, l2", temperature=0.1),
        cell("NT-Xent, tau 0.5, l2"),
        cell("NT-Xent, tau 1.0, l2", temperature=1.0),
        cell("NT-Xent, tau 0.1, no l2", temperature=0.1, hidden_norm="false"),
        cell("NT-Xent, tau 0.5, no l2", hidden_norm="false"),
        cell("NT-Xent, tau 1.0, no l2", temperature=1.0, hidden_norm="false"),
        cell("NT-Logistic, tau 0.2, l2", loss="nt_logistic", temperature=0.2),
        cell("NT-Logistic, tau 0.5, l2", loss="nt_logistic"),
        cell("margin triplet, m 0.4, l2", loss="margin_triplet", margin=0.4),
        cell("margin triplet, m 1.0, l2", loss="margin_triplet", margin=1.0),
    ],
    # Paper Fig. 9 (a small range): batch size x epochs; linear lr scaling (lr x B/256).
    "batch_length": [
        cell("batch 128, 1 epoch", batch_size=128, train_steps=400),
        cell("batch 256, 1 epoch"),
        cell("batch 128, 2 epochs", batch_size=128, train_steps=800),
        cell("batch 256, 2 epochs", train_steps=400),
    ],
    # What a wall-clock budget buys (RESULTS.md, "Time to accuracy"). Every cell plans
    # its own length for the budget (--time_budget); the runner times the whole process.
    "budget_10m": _budget_cells("10m"),
    "budget_30m": [recipe_cell("30m")],
}
