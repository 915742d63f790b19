"""Runs a study's cells, one pretraining per cell and seed, resumably: a run whose
`study_eval.json` exists is done and skipped; an interrupted pretraining resumes from
its checkpoint (simclr_tf.main's own resume) the next time the study is run."""

import contextlib
import json
import os
import subprocess
import sys
import time

from tools.studies import evaluate, grid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_FILE = "study_eval.json"


def study_root(root, extra_flags=()):
    """Where runs made with `extra_flags` live: their own tree under `root`, keyed by
    every extra flag, so a 50-step quick look is never taken for the real cell."""
    if not extra_flags:
        return root
    key = ",".join(f.lstrip("-").replace("/", "_") for f in extra_flags)
    return os.path.join(root, "extra", key)


def run_dir(root, cell, seed):
    return os.path.join(root, "cells", cell.key, f"seed_{seed}")


def pretrain_command(cell, seed, model_dir, data_dir, extra_flags=()):
    command = [
        sys.executable,
        "-m",
        "simclr_tf.main",
        f"--flagfile={grid.BASE_FLAGFILE}",
        f"--model_dir={model_dir}",
        f"--seed={seed}",
        *(f"--{name}={value}" for name, value in cell.flags),
        *extra_flags,
    ]
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    return command


def _tail(path, lines=3):
    with open(path) as f:
        return " | ".join(line.strip() for line in f.read().strip().splitlines()[-lines:])


def pretrain(cell, seed, model_dir, data_dir, extra_flags=()):
    """(ok, seconds, message): simclr_tf.main in its own process (a clean Keras state
    per run), its output kept in `model_dir/pretrain.log`."""
    os.makedirs(model_dir, exist_ok=True)
    log_path = os.path.join(model_dir, "pretrain.log")
    command = pretrain_command(cell, seed, model_dir, data_dir, extra_flags)
    start = time.perf_counter()
    with open(log_path, "a") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        return False, seconds, f"exit {code} (log: {log_path}): {_tail(log_path)}"
    return True, seconds, ""


def read_eval(model_dir):
    path = os.path.join(model_dir, EVAL_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_study(
    study, seeds, root, data_dir, splits, num_classes, extra_flags=(), log=print, only=""
):
    """Every (seed, cell) of `study` not done yet, seed by seed (a partial study covers
    every cell once before it repeats one); with `only`, the cells whose label has it."""
    from simclr_tf import run_dirs

    cells = [c for c in grid.STUDIES[study] if only in c.label]
    if not cells:
        raise RuntimeError(f"no cell of {study} has {only!r} in its label")
    train, test = splits
    total = len(cells) * len(seeds)
    done = 0
    for seed in seeds:
        for cell in cells:
            done += 1
            model_dir = run_dir(root, cell, seed)
            if read_eval(model_dir) is not None:
                log(f"[{done}/{total}] {cell.label}, seed {seed}: done before")
                continue
            log(f"[{done}/{total}] {cell.label}, seed {seed}: pretraining in {model_dir}")
            ok, seconds, message = pretrain(cell, seed, model_dir, data_dir, extra_flags)
            result = {"cell": cell.key, "label": cell.label, "seed": seed}
            if ok:
                start = time.perf_counter()
                result.update(evaluate.evaluate_run(model_dir, train, test, num_classes, seed))
                result["eval_s"] = time.perf_counter() - start
                result["pretrain_s"] = seconds
                log(f"    {seconds:.0f} s; " + _summary(result))
            elif "NaN or infinite" in message:
                # Divergence is an outcome of the cell, not a failure of the study.
                result.update({"diverged": message, "pretrain_s": seconds})
                log(f"    diverged: {message}")
            else:
                raise RuntimeError(f"{cell.label}, seed {seed}: pretraining failed: {message}")
            run_dirs.write_json_atomic(os.path.join(model_dir, EVAL_FILE), result)


RANDOM_INIT = "random_init"


def random_init_dir(root, seed):
    return os.path.join(root, RANDOM_INIT, f"seed_{seed}")


def base_config(extra_flags=()):
    """The Config of the base recipe (flags/study_cpu.cfg), as simclr_tf.main reads it."""
    from absl import flags

    from simclr_tf import main

    values = flags.FlagValues()
    main.define_flags(values)
    with contextlib.chdir(REPO):  # the recipes include each other by repository path
        values(["studies", f"--flagfile={grid.BASE_FLAGFILE}", *extra_flags])
    return main.config_from_flags(values)


def run_random_init(seeds, root, splits, num_classes, extra_flags=(), log=print):
    """The base network untrained, per seed, measured like every run."""
    from simclr_tf import run_dirs

    config = base_config(extra_flags)
    train, test = splits
    for seed in seeds:
        path = random_init_dir(root, seed)
        if read_eval(path) is not None:
            continue
        features = evaluate.random_init_features(config, [train, test], seed)
        result = {"label": "random init (no training)", "seed": seed}
        result.update(evaluate.evaluate_features(features, train, test, num_classes, seed))
        log(f"random init, seed {seed}: " + _summary(result))
        os.makedirs(path, exist_ok=True)
        run_dirs.write_json_atomic(os.path.join(path, EVAL_FILE), result)


def _summary(result):
    parts = []
    for kind in ("h", "z"):
        if kind in result:
            r = result[kind]
            if r.get("non_finite"):
                parts.append(f"{kind}: overflowed (not finite)")
            else:
                parts.append(f"{kind}: kNN {r['knn_acc']:.2%}, linear {r['linear_acc']:.2%}")
    return "; ".join(parts)
