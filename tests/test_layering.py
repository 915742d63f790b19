"""The package's architecture, enforced: which modules each module may import.

ALLOWED is the design, written down: a new import between modules is a design change
and is made here first. Imports inside functions count too.
"""

import ast
import importlib
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "simclr_tf"
MAX_LINES = 350

ALLOWED = {
    # The front door: the lazy public names (by string) and the CPU set-up before TF.
    "simclr_tf": {"hardware"},
    # Plain records and machine facts: no TensorFlow needed to read them.
    "config": set(),
    "hardware": {"config"},
    "run_dirs": {"config"},
    "reference_layout": {"config"},
    # Shared infrastructure.
    "keras_compat": set(),
    "checkpoints": set(),
    "run_lock": set(),
    "distributed": {"config", "keras_compat"},
    "losses": set(),
    "evaluation": set(),
    "feature_probe": set(),
    # Augmentation: parameters at the bottom, per-image and batched ops on top.
    "augment": set(),
    "augment.params": set(),
    "augment.random_ops": set(),
    "augment.ablation_ops": {"augment.random_ops"},
    "augment.image_ops": {"augment.ablation_ops", "augment.params", "augment.random_ops", "config"},
    "augment.batch_colour": {"augment.params", "config"},
    "augment.batch_ops": {"augment.batch_colour", "augment.params", "config"},
    # Data: sources know nothing of augmentation; only the pipeline joins the two.
    "data": {"data.source", "data.file_sources", "data.image_header", "data.tfds_source"},
    "data.image_header": set(),
    "data.source": set(),
    "data.file_sources": {"data.image_header", "data.source"},
    "data.tfds_source": {"data.source"},
    "data.subsets": {"data.source"},
    "data.pipeline": {"augment.batch_ops", "augment.image_ops", "config", "data.source"},
    # Models: layers, then networks, then the step models, then the config builders.
    "models": set(),
    "models.batch_norm": set(),
    "models.conv": set(),
    "models.resnet": {"models.batch_norm", "models.conv"},
    "models.heads": {"models.batch_norm"},
    "models.weight_decay": {"keras_compat", "optim.lars"},
    "models.representation_health": set(),
    "models.step_models": {
        "keras_compat",
        "models.heads",
        "models.representation_health",
        "models.resnet",
        "models.weight_decay",
    },
    "models.distillation": {"losses", "models.step_models"},
    "models.builders": {
        "config",
        "losses",
        "models.distillation",
        "models.heads",
        "models.resnet",
        "models.step_models",
    },
    "teacher": {"checkpoints", "config", "models.builders", "run_dirs"},
    "optim": set(),
    "optim.lars": set(),
    "optim.schedules": set(),
    "optim.optimizers": {"config", "optim.lars"},
    # Jobs.
    "callbacks": {"evaluation", "models.representation_health"},
    "time_budget": {"run_dirs"},
    "job_evaluation": {"data.pipeline", "data.subsets", "evaluation", "models.step_models"},
    "export": {
        "augment.image_ops",
        "checkpoints",
        "export_tflite",
        "model_card",
        "models.builders",
        "run_dirs",
    },
    "export_tflite": set(),
    "model_card": {"run_dirs"},
    "run_setup": {"config", "data", "distributed", "hardware"},
    "preemption": set(),
    "view_grid": set(),
    "representations": {"checkpoints", "models.builders", "run_dirs"},
    "training_loop": {
        "callbacks",
        "checkpoints",
        "config",
        "distributed",
        "keras_compat",
        "preemption",
        "optim.optimizers",
        "optim.schedules",
        "time_budget",
    },
    "train": {
        "callbacks",
        "checkpoints",
        "config",
        "data",
        "data.pipeline",
        "data.subsets",
        "distributed",
        "evaluation",
        "job_evaluation",
        "models.builders",
        "models.resnet",
        "models.step_models",
        "run_dirs",
        "run_lock",
        "run_setup",
        "teacher",
        "time_budget",
        "training_loop",
        "view_grid",
    },
    "convert": {
        "checkpoints",
        "config",
        "keras_compat",
        "models.builders",
        "reference_layout",
        "run_dirs",
    },
    # The command line: the only reader of absl flags.
    "flag_help": set(),
    "main": {
        "checkpoints",
        "config",
        "data",
        "export",
        "flag_help",
        "run_lock",
        "time_budget",
        "train",
    },
}


def _name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "simclr_tf"


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def project_imports(path):
    """Modules of the package that `path` imports (`from simclr_tf.data import pipeline`
    is `data.pipeline`; `from simclr_tf.data import DataError` is `data`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and (node.module.split(".")[0] == "simclr_tf")
        ):
            base = node.module[len("simclr_tf") :].lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if candidate in MODULES else (base or "simclr_tf"))
        elif isinstance(node, ast.Import):
            found.update(
                a.name[len("simclr_tf") :].lstrip(".") or "simclr_tf"
                for a in node.names
                if a.name.split(".")[0] == "simclr_tf"
            )
    return found


def test_every_module_has_an_allow_list():
    assert set(MODULES) == set(ALLOWED)


def test_each_module_imports_only_what_it_is_allowed():
    for name, path in MODULES.items():
        extra = project_imports(path) - ALLOWED[name] - {name}
        assert not extra, f"{name} imports {sorted(extra)}; allowed: {sorted(ALLOWED[name])}"


def test_the_allowed_imports_have_no_cycle():
    state = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(trail + [name])}"
        state[name] = "open"
        for dep in ALLOWED[name]:
            visit(dep, trail + [name])
        state[name] = "done"

    for name in ALLOWED:
        visit(name, [])


def test_the_public_names_come_from_the_modules_they_name():
    import simclr_tf

    for name, module in simclr_tf._EXPORTS.items():
        assert module.removeprefix("simclr_tf.") in MODULES, module
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_only_main_reads_absl_flags():
    for name, path in MODULES.items():
        if name != "main":
            text = path.read_text()
            assert "flags.FLAGS" not in text and "FLAGS." not in text, name


def test_no_module_is_longer_than_the_limit():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
