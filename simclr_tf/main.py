"""Command line: `python -m simclr_tf.main --flagfile=flags/quickstart.cfg`.

The only reader of absl FLAGS. One flag per config field, defined from the config
dataclasses so the two cannot drift; values are checked here and bad ones rejected
with a one-line reason before TensorFlow does any work.
"""

import dataclasses
import sys
import types
import typing

from absl import app, flags, logging

from simclr_tf import config as cfg
from simclr_tf.flag_help import HELP

ENUMS = {
    "mode": cfg.MODES,
    "strategy": cfg.STRATEGIES,
    "precision": cfg.PRECISIONS,
    "optimizer": cfg.OPTIMIZERS,
    "weight_decay_mode": cfg.WEIGHT_DECAY_MODES,
    "lr_scaling": cfg.LR_SCALINGS,
    "proj_head_mode": cfg.PROJ_HEAD_MODES,
    "loss": cfg.LOSSES,
    "jitter_version": cfg.JITTER_VERSIONS,
}
SECTIONS = {f.name: f.type for f in dataclasses.fields(cfg.Config)}


def define_flags(flag_values=flags.FLAGS):
    """One flag per config field, typed from the field's default."""
    for section in SECTIONS.values():
        for field in dataclasses.fields(section):
            name, default = field.name, field.default
            kw = dict(help=HELP[name], flag_values=flag_values)
            if name in ENUMS:
                flags.DEFINE_enum(name, default, ENUMS[name], **kw)
            elif name == "cifar_stem":
                flags.DEFINE_enum(name, "auto", ["auto", "true", "false"], **kw)
            elif isinstance(default, bool):
                flags.DEFINE_bool(name, default, **kw)
            elif isinstance(default, int):
                flags.DEFINE_integer(name, default, **kw)
            elif isinstance(default, float):
                flags.DEFINE_float(name, default, **kw)
            elif isinstance(default, tuple):
                flags.DEFINE_list(name, [repr(x) for x in default], **kw)  # exact
            else:
                flags.DEFINE_string(name, default, **kw)


def _value(field, raw):
    if field.name == "cifar_stem":
        return {"auto": None, "true": True, "false": False}[raw]
    if isinstance(field.default, tuple):
        try:
            values = tuple(float(x) for x in raw)
        except ValueError:
            raise cfg.ConfigError(f"--{field.name} takes numbers, got {raw}") from None
        if len(values) != 2 or values[0] > values[1]:
            raise cfg.ConfigError(f"--{field.name} takes two increasing numbers, got {raw}")
        return values
    if raw == "" and typing.get_origin(field.type) in (typing.Union, types.UnionType):
        return None  # Optional fields (`str | None`): an empty flag means unset
    return raw


def config_from_flags(values) -> cfg.Config:
    parts = {}
    for section_name, section in SECTIONS.items():
        parts[section_name] = section(
            **{f.name: _value(f, getattr(values, f.name)) for f in dataclasses.fields(section)}
        )
    return cfg.Config(**parts)


def validate(c: cfg.Config):
    """Raises ConfigError with one line naming the first bad value or combination."""
    checks = [
        (c.model.depth in cfg.RESNET_DEPTHS, f"--depth must be one of {cfg.RESNET_DEPTHS}"),
        (c.model.width_multiplier > 0, "--width_multiplier must be > 0"),
        (c.model.sk_ratio >= 0, "--sk_ratio must be >= 0"),
        (c.data.image_size >= 8, "--image_size must be at least 8"),
        (
            c.augment.view_size == 0 or c.augment.view_size >= 8,
            "--view_size must be 0 (the image size) or at least 8",
        ),
        (
            c.data.batch_size >= 2,
            "--batch_size must be at least 2 (one positive pair needs negatives)",
        ),
        (c.data.eval_batch_size >= 1, "--eval_batch_size must be >= 1"),
        (0 < c.data.label_fraction <= 1, "--label_fraction must be in (0, 1]"),
        (c.loss.temperature > 0, "--temperature must be > 0"),
        (c.optim.learning_rate > 0, "--learning_rate must be > 0"),
        (c.optim.weight_decay >= 0, "--weight_decay must be >= 0"),
        (0 <= c.optim.momentum < 1, "--momentum must be in [0, 1)"),
        (c.optim.warmup_epochs >= 0, "--warmup_epochs must be >= 0"),
        (
            c.run.train_epochs > 0 or c.run.train_steps > 0,
            "set --train_epochs > 0 or --train_steps > 0",
        ),
        (c.run.checkpoint_steps >= 1, "--checkpoint_steps must be >= 1"),
        (_budget_error(c) is None, _budget_error(c)),
        (
            not (c.run.time_budget and c.run.strategy == "multi_worker"),
            "--time_budget plans on one machine's clock; multi-worker runs would each plan "
            "their own length (give them --train_steps)",
        ),
        (c.run.keep_checkpoints >= 1, "--keep_checkpoints must be >= 1"),
        (c.model.proj_out_dim >= 1, "--proj_out_dim must be >= 1"),
        (c.model.num_proj_layers >= 1, "--num_proj_layers must be >= 1"),
        (
            c.model.fine_tune_after_block in (-1, 0, 1, 2, 3, 4),
            "--fine_tune_after_block must be -1..4",
        ),
        (c.run.knn_k >= 1, "--knn_k must be >= 1"),
        (c.run.knn_temperature > 0, "--knn_temperature must be > 0"),
        (c.run.knn_bank_size >= 1, "--knn_bank_size must be >= 1"),
        (c.run.eval_steps >= 0, "--eval_steps must be >= 0 (0: the whole eval split)"),
        (c.run.summary_steps >= 1, "--summary_steps must be >= 1"),
        (c.run.steps_per_execution >= 0, "--steps_per_execution must be >= 0 (0: auto)"),
        (c.run.train_steps >= 0, "--train_steps must be >= 0 (0: use --train_epochs)"),
        (c.data.shuffle_buffer >= 1, "--shuffle_buffer must be >= 1"),
        (c.data.max_image_pixels >= 1, "--max_image_pixels must be >= 1"),
        (c.augment.color_jitter_strength >= 0, "--color_jitter_strength must be >= 0"),
        (0 < c.model.bn_momentum < 1, "--bn_momentum must be in (0, 1)"),
        (bool(c.run.model_dir), "--model_dir must be set"),
        (
            c.run.mode != "distill" or c.distill.teacher,
            "--mode=distill needs --teacher (a fine-tuned run directory or an exported SavedModel)",
        ),
        (c.distill.distill_temperature > 0, "--distill_temperature must be > 0"),
        (c.distill.distill_label_weight >= 0, "--distill_label_weight must be >= 0"),
        (
            c.run.mode != "finetune" or c.run.init_checkpoint,
            "--mode=finetune needs --init_checkpoint (use --mode=supervised to train from scratch)",
        ),
        (
            c.run.mode != "linear_eval" or c.run.init_checkpoint or c.run.allow_random_encoder,
            "--mode=linear_eval needs --init_checkpoint (a pretraining or converted run); "
            "--allow_random_encoder measures an untrained encoder on purpose",
        ),
        (c.run.mode != "export" or c.run.model_dir, "--mode=export needs --model_dir"),
        (c.run.strategy != "tpu" or c.run.tpu is not None, "--strategy=tpu needs --tpu"),
        (
            c.data.label_fraction == 1 or c.run.mode in ("finetune", "linear_eval", "distill"),
            "--label_fraction applies to finetune, linear_eval and distill only",
        ),
        (
            c.data.label_subset is None
            or c.run.mode in ("finetune", "linear_eval", "supervised", "distill"),
            "--label_subset applies to finetune, linear_eval, supervised and distill only",
        ),
        (
            c.data.label_subset is None or c.data.label_fraction == 1,
            "set --label_fraction or --label_subset, not both",
        ),
    ]
    head_layers = {"none": 0, "linear": 1, "nonlinear": c.model.num_proj_layers}
    checks.append(
        (
            0 <= c.model.ft_proj_selector <= head_layers[c.model.proj_head_mode],
            f"--ft_proj_selector must be in 0..{head_layers[c.model.proj_head_mode]} "
            f"for a {c.model.proj_head_mode} head",
        )
    )
    for field in dataclasses.fields(cfg.AugmentConfig):
        if field.name.endswith("_prob"):
            value = getattr(c.augment, field.name)
            checks.append((0 <= value <= 1, f"--{field.name} must be in [0, 1]"))
    low, high = c.augment.area_range
    checks.append((0 < low <= high <= 1, "--area_range must lie in (0, 1]"))
    checks.append((c.augment.aspect_range[0] > 0, "--aspect_range must be positive"))
    for ok, message in checks:
        if not ok:
            raise cfg.ConfigError(message)


def check_label_use(c: cfg.Config, label_fraction_given: bool):
    """Distillation with a labelled term reads labels: refuse to read all of them unless
    that is asked for (a "10% labels" pipeline must not use 100% by default)."""
    if (
        c.run.mode == "distill"
        and c.distill.distill_label_weight > 0
        and c.data.label_subset is None
        and not label_fraction_given
    ):
        raise cfg.ConfigError(
            "--distill_label_weight > 0 reads labels: give the labelled subset "
            "(--label_subset or --label_fraction), or --label_fraction=1 for every label"
        )


TRAINING = ("pretrain", "linear_eval", "finetune", "supervised", "distill")
CLASSIFIERS = ("linear_eval", "finetune", "supervised", "distill")


def _read_by():
    """{field: the modes that read it}, for every config field (a test checks that none
    is missing, so a new flag cannot be left out of the unread-flag warning)."""
    everything = cfg.MODES
    table = {name: everything for name in cfg.field_names()}
    table.update({f.name: ("pretrain",) for f in dataclasses.fields(cfg.AugmentConfig)})
    table.update({f.name: ("pretrain",) for f in dataclasses.fields(cfg.LossConfig)})
    table.update({f.name: ("distill",) for f in dataclasses.fields(cfg.DistillConfig)})
    # eval and export take the model and its training from the run's config.json.
    table.update({f.name: TRAINING for f in dataclasses.fields(cfg.OptimConfig)})
    table.update({f.name: TRAINING for f in dataclasses.fields(cfg.ModelConfig)})
    for name in ("train_epochs", "train_steps", "time_budget", "checkpoint_steps"):
        table[name] = TRAINING
    table["keep_checkpoints"] = TRAINING
    for name in ("summary_steps", "steps_per_execution"):
        table[name] = TRAINING
    for name in ("knn_every_epochs", "knn_k", "knn_temperature", "knn_bank_size"):
        table[name] = ("pretrain",)
    table["linear_probe"] = ("pretrain",)
    table["ft_proj_selector"] = CLASSIFIERS
    table["fine_tune_after_block"] = ("finetune",)
    table["init_checkpoint"] = ("linear_eval", "finetune", "distill")
    table["allow_random_encoder"] = ("linear_eval",)
    table["label_fraction"] = CLASSIFIERS
    table["label_subset"] = CLASSIFIERS
    for name in cfg.field_names() - {"mode", "model_dir", "export_dir", "export_tflite"}:
        table[name] = tuple(m for m in table[name] if m != "export")
    table["export_dir"] = ("export",)
    table["export_tflite"] = ("export",)
    return table


READ_BY = _read_by()


def _budget_error(c: cfg.Config):
    """The one-line reason `--time_budget` cannot be read, or None."""
    from simclr_tf import time_budget

    if not c.run.time_budget:
        return None
    try:
        time_budget.parse_duration(c.run.time_budget)
    except time_budget.BudgetError as error:
        return str(error)
    return None


def _reads(c: cfg.Config, name):
    if name in ("label_fraction", "label_subset") and c.run.mode == "distill":
        return c.distill.distill_label_weight > 0  # no labelled term: no label is read
    if name in ("train_epochs", "train_steps") and c.run.time_budget:
        return False  # the budget plans the length
    return c.run.mode in READ_BY[name]


def ignored_flags(c: cfg.Config):
    """Names of the flags set away from their defaults that the chosen mode never reads."""
    default = cfg.Config()
    return [
        f.name
        for section in dataclasses.fields(cfg.Config)
        for f in dataclasses.fields(section.type)
        if getattr(getattr(c, section.name), f.name)
        != getattr(getattr(default, section.name), f.name)
        and not _reads(c, f.name)
    ]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags(flags.FLAGS)
        validate(config)
        check_label_use(config, flags.FLAGS["label_fraction"].present)
    except cfg.ConfigError as error:
        print(f"simclr_tf: error: {error}", file=sys.stderr)
        return 2
    ignored = ignored_flags(config)
    if ignored:
        logging.warning(
            "Ignored by --mode=%s (they apply to other modes): %s",
            config.run.mode,
            ", ".join(f"--{n}" for n in ignored),
        )
    from simclr_tf import train
    from simclr_tf.checkpoints import CheckpointSaveError, UnreadableCheckpoint
    from simclr_tf.data import DataError  # after validation: importing TF is slow
    from simclr_tf.run_lock import RunLocked

    try:
        if config.run.mode == "export":
            from simclr_tf import export

            results = export.export_from_config(config)
        else:
            _, results = train.run(config)
    except (
        DataError,
        cfg.ConfigError,
        FileNotFoundError,
        UnreadableCheckpoint,
        RunLocked,
    ) as error:
        print(f"simclr_tf: error: {error}", file=sys.stderr)
        return 2
    except (train.TrainingError, CheckpointSaveError) as error:  # stopped, nothing good lost
        print(f"simclr_tf: error: {error}", file=sys.stderr)
        return 3
    logging.info("Results: %s", results)
    summary = {k: v for k, v in results.items() if "acc" in k}
    print(f"simclr_tf: {config.run.mode} finished: {summary or results}")
    return 0


EXIT_BAD_INPUT = 2


def parse_flags(argv, flag_values=flags.FLAGS):
    """absl's parsing, with its errors (a missing flagfile, a value of the wrong type,
    an unknown flag) as one line and exit code 2, like every other bad input."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        print(f"simclr_tf: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run():
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
