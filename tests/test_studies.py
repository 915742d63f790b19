"""The study runner: its cells, the frozen-feature linear probe, the resumable runs,
and the table and heat map it reports."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from simclr_tf import feature_probe
from tools.studies import evaluate, grid, report, runner


def _clusters(n, num_classes, dim, rng, spread=0.3):
    centres = rng.normal(size=(num_classes, dim)) * 3
    labels = rng.integers(0, num_classes, n)
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


def test_linear_probe_separates_separable_classes_and_not_random_labels():
    rng = np.random.default_rng(0)
    x, y = _clusters(3000, 10, 16, rng)
    test_acc, train_acc = feature_probe.linear_probe_accuracy(
        x[:2000], y[:2000], x[2000:], y[2000:], 10, epochs=20
    )
    assert test_acc > 0.97 and train_acc > 0.97
    # Labels unrelated to the features: the test split stays at chance (0.1; the
    # binomial s.d. of 1,000 draws is 0.0095, so 0.16 is more than 6 s.d. above).
    random_labels = rng.integers(0, 10, 3000)
    chance, _ = feature_probe.linear_probe_accuracy(
        x[:2000], random_labels[:2000], x[2000:], random_labels[2000:], 10, epochs=20
    )
    assert chance < 0.16


def test_linear_probe_is_scale_free():
    """Standardisation: features scaled by 1e4 (as an unnormalised h can be) train alike."""
    rng = np.random.default_rng(1)
    x, y = _clusters(2000, 5, 8, rng, spread=1.5)
    small, _ = feature_probe.linear_probe_accuracy(x[:1500], y[:1500], x[1500:], y[1500:], 5)
    large, _ = feature_probe.linear_probe_accuracy(
        1e4 * x[:1500], y[:1500], 1e4 * x[1500:], y[1500:], 5
    )
    assert abs(small - large) <= 0.01


def test_standardise_uses_the_training_statistics():
    rng = np.random.default_rng(2)
    train, test = rng.normal(5, 3, (500, 4)), rng.normal(5, 3, (100, 4))
    a, b = feature_probe.standardise(train, test)
    # Computed in float64, returned as float32: |values| < 5 here, so each is within
    # 5 x 2^-24 (3e-7) of the exact result.
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(a.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(b, (test - train.mean(0)) / (train.std(0) + 1e-6), atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        dict(train_y=np.array([0, 1, 10])),
        dict(test_x=np.zeros((2, 5))),
        dict(train_x=np.zeros((4, 3))),
    ],
)
def test_linear_probe_refuses_bad_input(bad):
    args = dict(
        train_x=np.zeros((3, 3)),
        train_y=np.array([0, 1, 2]),
        test_x=np.zeros((2, 3)),
        test_y=np.array([0, 1]),
    )
    args.update(bad)
    with pytest.raises(ValueError):
        feature_probe.linear_probe_accuracy(num_classes=10, **args)


def test_every_cell_flag_is_a_main_flag_and_the_base_recipe_is_shared():
    from absl import flags

    from simclr_tf import main

    main_flags = flags.FlagValues()
    main.define_flags(main_flags)
    for study, cells in grid.STUDIES.items():
        keys = [c.key for c in cells]
        assert len(set(keys)) == len(keys), study
        for c in cells:
            for name, _ in c.flags:
                assert name in main_flags, f"{study}: {name} is not a simclr_tf.main flag"
    # The paper's default (crop + colour, s 0.5, nonlinear head, NT-Xent at tau 0.5 with
    # l2, batch 256 for one epoch) is one run, read by every study that has it.
    base = {
        "augmentation": "crop + colour",
        "colour_strength": "s = 0.5",
        "projection_head": "nonlinear",
        "loss_temperature": "NT-Xent, tau 0.5, l2",
        "batch_length": "batch 256, 1 epoch",
    }
    for study, label in base.items():
        assert next(c for c in grid.STUDIES[study] if c.label == label).key == "base"


def test_a_budget_table_shows_the_steps_each_plan_bought(tmp_path):
    from simclr_tf import time_budget

    cells = grid.STUDIES["budget_10m"]
    assert all(dict(c.flags)["time_budget"] == "10m" for c in cells)
    _fake_result(tmp_path, cells[0], 0, 0.50, 0.45)
    plan = time_budget.Plan(
        budget_s=600.0,
        steps=1135,
        warmup_steps=98,
        planned_at_step=12,
        step_s=0.5,
        overhead_per_step_s=0.0,
        reserve_s=4.0,
        elapsed_s=18.0,
        expected_end=0.0,
        replans=0,
        schedule={},
    )
    time_budget.write_plan(runner.run_dir(str(tmp_path), cells[0], 0), plan)
    text = report.table("budget_10m", [0], str(tmp_path))
    assert text.splitlines()[0].endswith("| steps |")
    row = next(line for line in text.splitlines() if line.startswith(f"| {cells[0].label} |"))
    assert row.endswith("| 100 | 1135 |")
    missing = next(line for line in text.splitlines() if line.startswith(f"| {cells[1].label} |"))
    assert missing.endswith("| - | - |")


@pytest.mark.parametrize("minutes", [10, 30])
def test_the_budget_recipes_are_the_cells_that_measured_them(minutes):
    """flags/cifar10_cpu10.cfg and cpu30.cfg train exactly as their measured cells (the
    study base plus the cell's flags); only --train_steps differs, which a budget
    ignores."""
    import contextlib
    import dataclasses

    from absl import flags

    from simclr_tf import main

    values = flags.FlagValues()
    main.define_flags(values)
    with contextlib.chdir(runner.REPO):
        values(["main", f"--flagfile=flags/cifar10_cpu{minutes}.cfg"])
    recipe = main.config_from_flags(values)
    cell = grid.recipe_cell(f"{minutes}m")
    measured = runner.base_config([f"--{k}={v}" for k, v in cell.flags])
    assert recipe.run.time_budget == f"{minutes}m"
    ignored = dict(train_steps=0, train_epochs=0)
    assert dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, **ignored)) == (
        dataclasses.replace(measured, run=dataclasses.replace(measured.run, **ignored))
    )
    assert main.ignored_flags(recipe) == []


def test_augmentation_cells_turn_off_what_they_do_not_name():
    colour_only = dict(grid.augmentation_cell(("colour",)).flags)
    assert colour_only == {"crop": "false", "flip": "false"}
    crop_cutout = dict(grid.augmentation_cell(("crop", "cutout")).flags)
    assert crop_cutout == {"color_jitter_prob": "0", "grayscale_prob": "0", "cutout_prob": "0.5"}


def _fake_result(root, cell, seed, linear, knn):
    path = runner.run_dir(str(root), cell, seed)
    os.makedirs(path)
    score = {"knn_acc": knn, "linear_acc": linear, "linear_train_acc": linear}
    with open(os.path.join(path, runner.EVAL_FILE), "w") as f:
        json.dump({"h": score, "z": score, "pretrain_s": 100.0}, f)


def test_table_reports_mean_and_sample_sd_over_seeds(tmp_path):
    cell = grid.STUDIES["colour_strength"][0]
    _fake_result(tmp_path, cell, 0, 0.40, 0.30)
    _fake_result(tmp_path, cell, 1, 0.44, 0.32)
    text = report.table("colour_strength", [0, 1], str(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith(f"| {cell.label} |"))
    sd = np.std([40.0, 44.0], ddof=1)
    assert f"42.00% ± {sd:.2f}" in row and "| 2 |" in row
    # Cells with no run yet are shown as missing, not as zero.
    assert "| s = 1.0 | 0 | - |" in text


def test_heatmap_draws_the_runs_that_exist(tmp_path):
    for i, ops in enumerate([("crop",), ("colour",), ("crop", "colour")]):
        _fake_result(tmp_path, grid.augmentation_cell(ops), 0, 0.2 + 0.1 * i, 0.2)
    matrix = report.heatmap_matrix([0], str(tmp_path))
    crop, colour = grid.HEATMAP_OPS.index("crop"), grid.HEATMAP_OPS.index("colour")
    assert matrix[crop][crop] == pytest.approx(0.2)
    assert matrix[crop][colour] == matrix[colour][crop] == pytest.approx(0.4)
    assert matrix[crop][grid.HEATMAP_OPS.index("cutout")] is None
    out = tmp_path / "heat.png"
    report.write_heatmap([0], str(tmp_path), str(out))
    image = np.asarray(Image.open(out).convert("RGB"), np.float32)
    assert image.shape[0] >= 300 and image.shape[1] >= 300 and image.std() > 10
    with pytest.raises(ValueError, match="no augmentation runs"):
        report.write_heatmap([0], str(tmp_path / "empty"), str(tmp_path / "x.png"))


def test_a_study_runs_evaluates_and_resumes(tmp_path, cifar_data_dir, monkeypatch):
    """One tiny cell end to end on real CIFAR-10: pretraining in its own process, the
    frozen-feature scores, then a rerun that trains nothing."""
    from simclr_tf.data import open_source

    monkeypatch.setitem(grid.STUDIES, "tiny", [grid.cell("tiny", proj_head_mode="linear")])
    source = open_source("cifar10", cifar_data_dir, download=False)
    train, test = evaluate.load_split(source, "train", 32), evaluate.load_split(source, "test", 32)
    splits = (
        evaluate.Split(train.images[:600], train.labels[:600]),
        evaluate.Split(test.images[:300], test.labels[:300]),
    )
    extra = [
        "--train_steps=2",
        "--batch_size=32",
        "--width_multiplier=0.125",
        "--checkpoint_steps=2",
        "--summary_steps=1",
        "--precision=float32",
    ]
    lines = []
    runner.run_study("tiny", [0], str(tmp_path), cifar_data_dir, splits, 10, extra, lines.append)
    result = runner.read_eval(runner.run_dir(str(tmp_path), grid.STUDIES["tiny"][0], 0))
    for kind in ("h", "z"):
        for metric in ("knn_acc", "linear_acc", "linear_train_acc"):
            assert 0.0 <= result[kind][metric] <= 1.0
    # z of a linear head is 128-d, h of a 0.125x ResNet-18 64-d: two distinct readings.
    assert result["h"] != result["z"]

    # The untrained floor, measured the same way and shown under the study's rows.
    runner.run_random_init([0], str(tmp_path), splits, 10, extra, lines.append)
    assert "| random init (no training) | 1 |" in report.table("tiny", [0], str(tmp_path))

    curves = tmp_path / "curves.png"
    assert "loss" in report.write_curves("tiny", 0, str(tmp_path), str(curves))
    image = np.asarray(Image.open(curves).convert("RGB"), np.float32)
    assert image.shape[1] > image.shape[0] > 200 and image.std() > 10

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "pretrain", must_not_train)
    runner.run_study("tiny", [0], str(tmp_path), cifar_data_dir, splits, 10, extra, lines.append)
    assert lines[-1].endswith("done before")


def test_only_runs_the_cells_whose_label_has_the_text(tmp_path, monkeypatch):
    ran = []

    def pretrain(cell, seed, model_dir, data_dir, extra_flags=()):
        ran.append(cell.label)
        os.makedirs(model_dir)
        return False, 0.0, "NaN or infinite loss"  # recorded as diverged, nothing to score

    monkeypatch.setattr(runner, "pretrain", pretrain)
    runner.run_study("budget_10m", [0], str(tmp_path), None, (None, None), 10, only="recipe")
    assert ran == ["recipe (flags/cifar10_cpu10.cfg)"]
    with pytest.raises(RuntimeError, match="no cell"):
        runner.run_study("budget_10m", [0], str(tmp_path), None, (None, None), 10, only="xyz")


def _cli(*args):
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run(
        [sys.executable, "-m", "tools.studies", *args], cwd=REPO, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--study"),
        (["--study=nothing"], "invalid choice"),
        (["--study=colour_strength", "--seeds=a"], "--seeds must be integers"),
        (["--study=colour_strength", "--heatmap_out=x.png"], "--heatmap_out is for"),
    ],
)
def test_studies_command_refuses_bad_flags(args, message):
    result = _cli(*args)
    assert result.returncode == 2 and message in result.stderr


def test_studies_report_only_prints_a_table_of_missing_runs(tmp_path):
    result = _cli("--study=projection_head", "--report_only", f"--root={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| 0 | - |") == len(grid.STUDIES["projection_head"])


def test_runs_with_extra_flags_are_never_read_as_the_cells_runs(tmp_path):
    """A quick look (`--extra_flag=--train_steps=50`) lives in its own tree: the real
    cell's run is not reported for it, nor its runs for the real cell."""
    cell = grid.STUDIES["colour_strength"][0]
    _fake_result(tmp_path, cell, 0, 0.40, 0.30)
    quick = runner.study_root(str(tmp_path), ["--train_steps=50"])
    assert quick != str(tmp_path)
    assert quick != runner.study_root(str(tmp_path), ["--train_steps=60"])
    assert runner.study_root(str(tmp_path), []) == str(tmp_path)
    row = f"| {cell.label} | 1 |"
    plain = _cli("--study=colour_strength", "--report_only", "--seeds=0", f"--root={tmp_path}")
    assert row in plain.stdout, plain.stdout
    looked = _cli(
        "--study=colour_strength",
        "--report_only",
        "--seeds=0",
        f"--root={tmp_path}",
        "--extra_flag=--train_steps=50",
    )
    assert looked.returncode == 0 and row not in looked.stdout
    assert f"| {cell.label} | 0 | - |" in looked.stdout


def test_random_init_is_the_seeded_untrained_base_network():
    rng = np.random.default_rng(3)
    split = evaluate.Split(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.arange(8))
    config = runner.base_config(["--width_multiplier=0.125"])
    assert (config.model.depth, config.run.train_steps, config.loss.temperature) == (18, 200, 0.5)
    a = evaluate.random_init_features(config, [split], seed=0)
    b = evaluate.random_init_features(config, [split], seed=0)
    c = evaluate.random_init_features(config, [split], seed=1)
    assert a["h"][0].shape == (8, 64) and a["z"][0].shape == (8, 128)
    np.testing.assert_array_equal(a["h"][0], b["h"][0])
    assert not np.allclose(a["h"][0], c["h"][0])


@pytest.mark.slow
def test_the_floor_is_the_network_a_run_of_that_seed_starts_from(tmp_path, cifar_data_dir):
    """A one-step pretraining whose warmup puts the learning rate at 0 keeps its
    starting kernels: they must be the floor's, kernel for kernel."""
    import subprocess
    import sys

    import tensorflow as tf

    from conftest import REPO

    flags = ["--width_multiplier=0.125", "--train_steps=1", "--warmup_epochs=1"]
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "simclr_tf.main", f"--flagfile={grid.BASE_FLAGFILE}",
         f"--model_dir={run}", f"--data_dir={cifar_data_dir}", "--seed=4", *flags],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    import keras

    keras.utils.set_random_seed(4)  # as random_init_features(config, splits, seed=4) does
    floor_encoder, _ = evaluate._encoder_and_head(runner.base_config(flags))
    # Every 4-D tensor of the checkpoint (Keras 3 stores each variable once, under the
    # first path it finds, often the optimizer's): the kernels and their momentum slots.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run)))
    stored = [
        reader.get_tensor(name)
        for name, shape in tf.train.list_variables(str(run))
        if len(shape) == 4
    ]
    kernels = [v.numpy() for v in floor_encoder.weights if len(v.shape) == 4]
    assert len(kernels) > 10 and len(stored) >= len(kernels)
    for kernel in kernels:
        assert np.abs(kernel).max() > 0
        assert any(t.shape == kernel.shape and np.array_equal(kernel, t) for t in stored)


def test_scores_survive_features_that_overflow_float32_squares():
    """Without L2 normalisation in the loss an encoder can output ~1e19 (seen in the
    loss study): such features must still be scored, and infinite ones flagged."""
    rng = np.random.default_rng(4)
    x, y = _clusters(1500, 5, 8, rng)
    train, test = evaluate.Split(None, y[:1000]), evaluate.Split(None, y[1000:])
    plain = evaluate.score(x[:1000], x[1000:], train, test, 5)
    huge = evaluate.score(1e19 * x[:1000], 1e19 * x[1000:], train, test, 5)
    assert plain["knn_acc"] > 0.95 and huge["knn_acc"] == plain["knn_acc"]
    assert abs(huge["linear_acc"] - plain["linear_acc"]) <= 0.01
    assert huge["max_abs"] == pytest.approx(1e19 * np.abs(x).max(), rel=1e-6)
    overflowed = x.copy()
    overflowed[3, 0] = np.inf
    assert evaluate.score(overflowed[:1000], x[1000:], train, test, 5) == {"non_finite": True}
    line = runner._summary({"h": huge, "z": {"non_finite": True}})
    assert "h: kNN" in line and "z: overflowed" in line
    with pytest.raises(ValueError, match="finite"):
        feature_probe.linear_probe_accuracy(overflowed, y, x, y, 5)


def test_a_failed_pretraining_stops_the_study_with_its_log(tmp_path, cifar_data_dir):
    result = _cli(
        "--study=colour_strength",
        f"--root={tmp_path}",
        f"--data_dir={cifar_data_dir}",
        "--extra_flag=--batch_size=0",
    )
    assert result.returncode == 1
    assert "tools.studies: error: s = 0.25, seed 0: pretraining failed: exit 2" in result.stderr
    assert "pretrain.log" in result.stderr and "Traceback" not in result.stderr
