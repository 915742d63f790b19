"""Flags <-> config mapping and the start-up checks of the CLI."""

import os
import subprocess
import sys

import pytest
from absl import flags

from simclr_tf import config as cfg
from simclr_tf import main

from conftest import REPO


def _parse(*args):
    values = flags.FlagValues()
    main.define_flags(values)
    values(["simclr_tf", *args])
    return main.config_from_flags(values)


def test_every_config_field_has_exactly_one_flag():
    values = flags.FlagValues()
    main.define_flags(values)
    assert set(values) == cfg.field_names()
    assert set(main.HELP) == cfg.field_names()


@pytest.mark.parametrize("recipe", sorted(os.listdir(REPO / "flags")))
def test_every_recipe_parses_and_validates(recipe, monkeypatch):
    monkeypatch.chdir(REPO)
    config = _parse(f"--flagfile=flags/{recipe}", "--init_checkpoint=x")
    if config.run.mode not in ("finetune", "linear_eval"):
        config = _parse(f"--flagfile=flags/{recipe}")
    main.validate(config)


def test_flag_defaults_are_the_config_defaults_exactly():
    assert _parse() == cfg.Config()  # e.g. the 4/3 aspect bound, not a rounded 1.33333


def test_an_empty_flag_unsets_an_optional_setting():
    config = _parse("--eval_split=", "--init_checkpoint=", "--data_dir=")
    assert config.data.eval_split is None and config.run.init_checkpoint is None
    assert config.data.data_dir is None
    assert _parse("--eval_split=validation").data.eval_split == "validation"


def test_flags_reach_the_config():
    config = _parse(
        "--depth=50",
        "--width_multiplier=0.5",
        "--area_range=0.2,0.9",
        "--cifar_stem=false",
        "--blur_prob=0",
        "--precision=mixed_bfloat16",
    )
    assert config.model.depth == 50 and config.model.width_multiplier == 0.5
    assert config.augment.area_range == (0.2, 0.9) and config.model.cifar_stem is False
    assert config.augment.blur_prob == 0.0 and config.run.precision == "mixed_bfloat16"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--depth=42"], "--depth"),
        (["--label_fraction=0"], "--label_fraction"),
        (["--temperature=-1"], "--temperature"),
        (["--mode=finetune"], "--init_checkpoint"),
        (["--mode=linear_eval"], "--mode=linear_eval needs --init_checkpoint"),
        (["--grayscale_prob=1.5"], "--grayscale_prob"),
        (["--proj_head_mode=linear", "--ft_proj_selector=2"], "--ft_proj_selector"),
        (["--area_range=0.9,0.1"], "--area_range"),
        (["--aspect_range=0,1.3"], "--aspect_range"),
        (["--knn_temperature=0"], "--knn_temperature"),
        (["--knn_bank_size=0"], "--knn_bank_size"),
        (["--eval_steps=-1"], "--eval_steps"),
        (["--summary_steps=0"], "--summary_steps"),
        (["--train_steps=-5"], "--train_steps"),
        (["--shuffle_buffer=0"], "--shuffle_buffer"),
        (["--color_jitter_strength=-0.5"], "--color_jitter_strength"),
        (["--bn_momentum=1"], "--bn_momentum"),
        (["--bn_momentum=0"], "--bn_momentum"),
        (["--time_budget=30x"], "--time_budget"),
        (["--time_budget=0s"], "--time_budget"),
        (["--time_budget=30m", "--strategy=multi_worker"], "multi-worker"),
    ],
)
def test_bad_values_are_rejected_with_a_reason(args, message):
    with pytest.raises(cfg.ConfigError, match=message):
        main.validate(_parse(*args))


def test_a_time_budget_replaces_the_run_length_flags():
    config = _parse("--time_budget=1h30m", "--train_epochs=5", "--train_steps=100")
    main.validate(config)
    assert set(main.ignored_flags(config)) >= {"train_epochs", "train_steps"}


def test_linear_eval_on_an_untrained_encoder_only_when_asked_for():
    main.validate(_parse("--mode=linear_eval", "--init_checkpoint=runs/pre"))
    main.validate(_parse("--mode=linear_eval", "--allow_random_encoder"))
    assert main.ignored_flags(_parse("--mode=pretrain", "--allow_random_encoder")) == [
        "allow_random_encoder"
    ]


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "simclr_tf.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def test_cli_rejects_bad_flag_in_one_line():
    result = _cli("--depth=42")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "simclr_tf: error: --depth must be one of (18, 34, 50, 101, 152, 200)"
    ]


def test_cli_reports_missing_data_in_one_line(tmp_path):
    result = _cli("--dataset=folder:" + str(tmp_path / "nowhere"), f"--model_dir={tmp_path}/m")
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("simclr_tf: error:")]
    assert errors == [f"simclr_tf: error: image folder not found: {tmp_path / 'nowhere'}"]
    assert "Traceback" not in result.stderr


def test_cli_reports_wrong_split_in_one_line(tmp_path, cifar_data_dir):
    result = _cli(
        "--dataset=cifar10",
        f"--data_dir={cifar_data_dir}",
        "--train_split=tran",
        f"--model_dir={tmp_path}/m",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no split 'tran'" in result.stderr


def test_flags_the_mode_never_reads_are_named():
    assert main.ignored_flags(
        _parse(
            "--mode=linear_eval",
            "--color_jitter_strength=0.3",
            "--temperature=0.2",
            "--learning_rate=0.5",
        )
    ) == ["color_jitter_strength", "temperature"]
    assert main.ignored_flags(
        _parse("--mode=pretrain", "--color_jitter_strength=0.3", "--ft_proj_selector=1")
    ) == ["ft_proj_selector"]
    assert "depth" in main.ignored_flags(_parse("--mode=eval", "--depth=18"))
    assert main.ignored_flags(_parse("--mode=export", "--model_dir=r", "--export_dir=e")) == []


def test_every_config_field_says_which_modes_read_it():
    assert set(main.READ_BY) == cfg.field_names()
    assert all(set(modes) <= set(cfg.MODES) for modes in main.READ_BY.values())


@pytest.mark.parametrize(
    "args, ignored",
    [
        (["--mode=pretrain", "--init_checkpoint=x"], ["init_checkpoint"]),
        (["--mode=supervised", "--init_checkpoint=x"], ["init_checkpoint"]),
        (
            ["--mode=finetune", "--init_checkpoint=x", "--knn_k=5", "--knn_temperature=0.2"],
            ["knn_k", "knn_temperature"],
        ),
        (["--mode=distill", "--teacher=t", "--knn_bank_size=7"], ["knn_bank_size"]),
        (["--mode=linear_eval", "--fine_tune_after_block=2"], ["fine_tune_after_block"]),
        (["--mode=finetune", "--init_checkpoint=x", "--fine_tune_after_block=2"], []),
        # Distillation reads labels only with a labelled term.
        (["--mode=distill", "--teacher=t", "--label_subset=ids.txt"], ["label_subset"]),
        (["--mode=distill", "--teacher=t", "--label_fraction=0.1"], ["label_fraction"]),
        (["--mode=distill", "--teacher=t", "--label_fraction=0.1", "--distill_label_weight=1"], []),
        (["--mode=pretrain", "--allow_random_encoder"], ["allow_random_encoder"]),
        (["--mode=pretrain", "--export_dir=e"], ["export_dir"]),
    ],
)
def test_the_flags_a_mode_does_not_read_are_named(args, ignored):
    assert main.ignored_flags(_parse(*args)) == ignored


def test_no_recipe_sets_a_flag_its_mode_does_not_read(monkeypatch):
    """Beyond the shared CIFAR settings the classifier recipes include (pretraining
    augmentation and temperature, read by pretraining only)."""
    monkeypatch.chdir(REPO)
    shared = {"color_jitter_strength", "blur_prob", "temperature"}
    for recipe in sorted(os.listdir(REPO / "flags")):
        config = _parse(f"--flagfile=flags/{recipe}")
        assert set(main.ignored_flags(config)) <= shared, recipe


def test_labelled_distillation_reads_all_labels_only_when_asked_for():
    base = ("--mode=distill", "--teacher=runs/t", "--distill_label_weight=0.5")
    with pytest.raises(cfg.ConfigError, match="reads labels"):
        main.check_label_use(_parse(*base), label_fraction_given=False)
    main.check_label_use(_parse(*base, "--label_fraction=1"), label_fraction_given=True)
    main.check_label_use(_parse(*base, "--label_fraction=0.1"), label_fraction_given=True)
    main.check_label_use(_parse(*base, "--label_subset=ids.txt"), label_fraction_given=False)
    # Without a labelled term no label is read.
    main.check_label_use(_parse("--mode=distill", "--teacher=runs/t"), label_fraction_given=False)
    # The command line refuses in one line, before any work.
    result = _cli(*base, "--model_dir=/nonexistent/run")
    assert result.returncode == 2 and "reads labels" in result.stderr
    assert "Traceback" not in result.stderr


def _wrong_value(flag):
    if isinstance(flag, flags._flag.EnumFlag):
        return "no_such_choice"
    if isinstance(flag, flags._flag.BooleanFlag):
        return "maybe"
    if flag.flag_type() in ("int", "float"):
        return "not_a_number"
    return None


def test_every_typed_flag_refuses_a_wrong_value_in_one_line(capsys):
    """Looped over the whole registry: each flag with a value of the wrong type ends
    parsing with exit 2 and one line naming the flag."""
    values = flags.FlagValues()
    main.define_flags(values)
    tried = 0
    for name, flag in values._flags().items():
        bad = _wrong_value(flag)
        if bad is None or name != flag.name:
            continue
        fresh = flags.FlagValues()
        main.define_flags(fresh)
        with pytest.raises(SystemExit) as exit_info:
            main.parse_flags(["simclr_tf", f"--{name}={bad}"], fresh)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1, (name, err)
        assert err[0].startswith("simclr_tf: error:") and name in err[0], (name, err)
        tried += 1
    assert tried >= 40  # every int, float, bool and enum flag


def test_a_missing_flagfile_is_one_line_and_exit_2():
    result = _cli("--flagfile=flags/no_such_recipe.cfg")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "simclr_tf: error: ERROR:: Unable to open flagfile: [Errno 2] No such file or "
        "directory: 'flags/no_such_recipe.cfg'"
    ]
