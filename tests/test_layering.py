"""Imports point downward only: each module may import only modules listed before it."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "simclr_tf"
ORDER = [
    "config", "hardware", "run_dirs", "random_ops", "ablation_ops", "augment", "batch_augment", "batch_norm", "conv", "resnet",
    "heads", "losses", "lars",
    "schedules", "distributed", "datasource", "tfds_source", "file_sources", "sources",
    "pipeline", "model", "optimizers", "evaluation", "builders", "callbacks", "export",
    "train", "main",
]


def _project_imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "simclr_tf":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("simclr_tf."):
                names.add(node.module.split(".")[1])
    return names


def test_every_module_is_placed_in_the_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)


def test_imports_point_downward():
    for index, name in enumerate(ORDER):
        imported = _project_imports(PACKAGE / f"{name}.py")
        upward = imported - set(ORDER[:index])
        assert not upward, f"{name} imports {sorted(upward)} from above it"


def test_only_main_reads_absl_flags():
    for path in PACKAGE.glob("*.py"):
        if path.stem != "main":
            assert "flags.FLAGS" not in path.read_text() and "FLAGS." not in path.read_text()
