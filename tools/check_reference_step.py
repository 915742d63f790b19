"""Runs simclr_tf's own pretraining step on a reference training fixture and checks
every number against what google-research/simclr's `tf2/` code computed.

  python tools/check_reference_step.py \\
      --fixture=../shared/data/reference_training/tf2_r18_seed1 \\
      --flagfile=flags/cifar10_r18_pretrain.cfg

A fixture (its README states the format) holds the reference's flags, initial weights
(a TF2 checkpoint, or a numpy recipe), one batch of two views, and per step the
learning rate, losses, forward outputs, gradients, every variable and the final LARS
momentum. The config is the recipe's (`--flagfile`, else simclr_tf's defaults) with
only what the fixture states replaced; the model is built, compiled and stepped by
the code a run uses (`builders`, `training_loop.compile_for_run`,
`PretrainModel.train_step`, LARS, the schedule, batch norm), on the fixture's views
instead of augmented ones. One line per check; exit 0 iff all hold, 1 if any fails,
2 if the fixture cannot be read or asks for what simclr_tf does not build.

Tolerances (float32, unit roundoff u = 2**-24):
- scalars (learning rate, losses, weight-decay term, total, entropy): 1e-5 relative;
  accuracies exactly (they count argmaxes);
- forward outputs (h, projection, probe logits, contrastive logits): 1e-4 of max |ref|;
- gradients, LARS momentum, the update of every variable (w<t> - w0, BN moving
  statistics included) and the update norms: `GRADIENT_TOLERANCE`, derived below.
  Weights are compared beyond one float32 spacing of the reference value, since a
  LARS update is ~1e-4 of |w| and rounding w itself is ~1e-3 of that update.
- after step 1 the weights differ by rounding, and a ReLU input within that rounding of
  0 can switch sides in one run: a large, local difference that is not a different
  step. `--perturbed_runs` runs start one float32 spacing away; element by element, a
  difference counts only beyond SPREAD_FACTOR x how far they moved our own result.

The step runs in the fixture's numeric environment (TensorFlow's own kernels with
oneDNN off, deterministic ops), set before TensorFlow loads; `--onednn` measures the
oneDNN kernels instead.
"""

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from simclr_tf import main as simclr_main  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("fixture", None, "A reference training fixture directory.")
flags.DEFINE_bool("verbose", False, "Also print the worst variables of each check.")
flags.DEFINE_bool(
    "onednn",
    False,
    "Run on TensorFlow's oneDNN kernels. Off by default: the fixtures were made with "
    "TF_ENABLE_ONEDNN_OPTS=0, and other kernels round differently (BUILD.md, "
    "Differences from the reference implementation).",
)
flags.DEFINE_integer(
    "perturbed_runs",
    4,
    "Runs from initial states one float32 spacing away, to measure how far rounding "
    "alone moves each compared number (0: none).",
    lower_bound=0,
)
flags.mark_flag_as_required("fixture")
simclr_main.define_flags()

UNIT_ROUNDOFF = 2.0**-24
SCALAR_TOLERANCE = 1e-5
FORWARD_TOLERANCE = 1e-4
# Two float32 implementations that sum in different orders differ by about
# sqrt(K) u per reduction of K terms (random-walk rounding). The longest reduction of
# a CIFAR step is a weight gradient over 2B x 32 x 32 positions (32,768 at B = 16:
# sqrt(K) u = 1.1e-5); batch norm's backward subtracts means of such sums, losing up
# to ~2 digits to cancellation, so differences reach ~100 sqrt(K) u ~ 1e-3 of the
# largest element. The check sets 1e-3 x max(1, sqrt(K / 32768)) for the fixture's K.
GRADIENT_CANCELLATION = 100.0
# A difference up to this multiple of the perturbed runs' spread is rounding (see
# `_beyond_spread`).
SPREAD_FACTOR = 2.0
EXIT_BAD_FIXTURE = 2


class FixtureError(ValueError):
    """The fixture cannot be read, or asks for a network simclr_tf does not build."""


@dataclasses.dataclass
class Fixture:
    path: str
    manifest: dict
    inputs: dict
    outputs: dict

    @property
    def flag(self):
        return self.manifest["flag_values"]


def read_fixture(path):
    import numpy as np

    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
        inputs = dict(np.load(os.path.join(path, "inputs.npz")))
        outputs = dict(np.load(os.path.join(path, "outputs.npz")))
    except (OSError, ValueError) as error:
        raise FixtureError(f"{path}: not a readable fixture ({error})") from None
    return Fixture(path, manifest, inputs, outputs)


def fixture_config(fixture, base):
    """`base` (the recipe's Config) with the settings the fixture states."""
    from simclr_tf.config import LossConfig

    f = fixture.flag
    if f.get("train_mode", "pretrain") != "pretrain":
        raise FixtureError(f"train_mode {f['train_mode']!r}: only pretrain steps are checked")
    if f.get("se_ratio", 0) > 0:
        raise FixtureError("se_ratio > 0: simclr_tf builds no squeeze-and-excitation layers")
    if f.get("ft_proj_selector", 0) != 0:
        raise FixtureError("ft_proj_selector != 0: the pretraining probe reads h")
    m = fixture.manifest
    batch = int(f["train_batch_size"])
    replace = dataclasses.replace
    return replace(
        base,
        run=replace(
            base.run,
            mode="pretrain",
            train_steps=int(m["total_steps"]),
            precision="float32",
            jit_compile=False,
            steps_per_execution=1,
        ),
        data=replace(base.data, image_size=int(f["image_size"]), batch_size=batch),
        model=replace(
            base.model,
            depth=int(f["resnet_depth"]),
            width_multiplier=float(f["width_multiplier"]),
            sk_ratio=float(f["sk_ratio"]),
            cifar_stem=bool(m.get("cifar_stem", int(f["image_size"]) <= 32)),
            sync_bn=bool(f["global_bn"]),
            bn_momentum=float(f["batch_norm_decay"]),
            proj_head_mode=f["proj_head_mode"],
            num_proj_layers=int(f["num_proj_layers"]),
            proj_out_dim=int(f["proj_out_dim"]),
            linear_probe=bool(f["lineareval_while_pretraining"]),
        ),
        loss=replace(
            base.loss,
            loss=LossConfig.loss,
            temperature=float(f["temperature"]),
            hidden_norm=bool(f["hidden_norm"]),
        ),
        optim=replace(
            base.optim,
            optimizer=f["optimizer"],
            learning_rate=float(f["learning_rate"]),
            lr_scaling=f["learning_rate_scaling"],
            warmup_epochs=float(f["warmup_epochs"]),
            weight_decay=float(f["weight_decay"]),
            momentum=float(f["momentum"]),
        ),
    )


def _sha256(array):
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def initial_tensors(fixture):
    """({checkpoint key: float32 array}, {checkpoint key: shape}) of the initial state,
    from `ckpt_init/` or, for `init: recipe` fixtures, from the fixture's generator."""
    import numpy as np

    m = fixture.manifest
    by_key = {v["checkpoint_key"]: v for v in m["variables"]}
    if m.get("init") == "recipe":
        spec = importlib.util.spec_from_file_location(
            "fixture_gen_init", os.path.join(fixture.path, "gen_init.py")
        )
        generator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generator)
        by_name = generator.regenerate(m)
        tensors = {v["checkpoint_key"]: by_name[v["name"]] for v in m["variables"]}
    else:
        import tensorflow as tf

        reader = tf.train.load_checkpoint(os.path.join(fixture.path, m["ckpt_init"]))
        tensors = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    for key, v in by_key.items():
        if key not in tensors:
            raise FixtureError(f"the initial state has no {key}")
        if _sha256(tensors[key]) != v["sha256_initial"]:
            raise FixtureError(f"{key}: initial value does not match the manifest's sha256")
    shapes = {k: list(np.shape(t)) for k, t in tensors.items()}
    return tensors, shapes


def build(fixture, config):
    """The compiled PretrainModel holding the fixture's initial state, and
    {reference variable name: our variable}."""
    import numpy as np

    from simclr_tf import convert, reference_layout, training_loop

    tensors, shapes = initial_tensors(fixture)
    try:
        layout = reference_layout.read_layout(shapes)
    except reference_layout.LayoutError as error:
        raise FixtureError(f"initial state: {error}") from None
    classes = int(fixture.inputs["labels_onehot"].shape[1]) if config.model.linear_probe else 0
    if bool(layout.supervised) != bool(classes):
        raise FixtureError("the supervised head and lineareval_while_pretraining disagree")
    model, pairs = convert.build_model(layout, config, classes)
    for variable, key in pairs:
        variable.assign(np.asarray(tensors[key], np.float32))
    ours = {key: variable for variable, key in pairs}
    named = {}
    for v in fixture.manifest["variables"]:
        if v["checkpoint_key"] not in ours:
            raise FixtureError(f"{v['name']}: no simclr_tf variable holds it")
        named[v["name"]] = ours[v["checkpoint_key"]]
    m = fixture.manifest
    steps_per_epoch = m["num_examples_for_lr_schedule"] / config.data.batch_size
    training_loop.compile_for_run(model, config, config.run.train_steps, steps_per_epoch)
    model.captured_gradients = _capture_gradients(model)
    return model, named


def _capture_gradients(model):
    """Variables the compiled step writes each gradient into, by wrapping the
    optimizer's `apply` (the gradients of the total loss, before LARS adds decay)."""
    import tensorflow as tf

    captured = [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.trainable_variables]
    ids = {id(v): i for i, v in enumerate(model.trainable_variables)}
    apply = model.optimizer.apply

    def recording_apply(grads, variables):
        grads = list(grads)
        for g, v in zip(grads, variables):
            captured[ids[id(v)]].assign(g)
        return apply(grads, variables)

    model.optimizer.apply = recording_apply
    return {id(v): captured[i] for i, v in enumerate(model.trainable_variables)}


def _forward(model, images, temperature, normalize):
    """Training-mode forward outputs with the current weights; BN statistics kept."""
    import tensorflow as tf

    from simclr_tf import losses

    state = [v.numpy() for v in model.non_trainable_variables]
    out = model(images, training=True)
    for variable, value in zip(model.non_trainable_variables, state):
        variable.assign(value)
    z1, z2 = tf.split(out["proj_head_output"], 2, axis=0)
    _, _, cross = losses.contrastive_logits(z1, z2, temperature, normalize)
    result = {
        "hiddens": out["final_avg_pool"].numpy(),
        "proj_head_output": out["proj_head_output"].numpy(),
        "logits_con_ab": cross.numpy(),
    }
    if "probe_logits" in out:
        result["logits_sup"] = out["probe_logits"].numpy()
    return result


def run_steps(fixture, model, named, config, steps=3):
    """Per step: scalars, forward outputs, gradients and variables (by reference name),
    then the LARS momentum after the last step."""
    import numpy as np
    import tensorflow as tf

    gradients = model.captured_gradients
    data = {
        "view1": tf.constant(fixture.inputs["views1"]),
        "view2": tf.constant(fixture.inputs["views2"]),
        "label": tf.constant(fixture.inputs["labels"].astype(np.int32)),
    }
    images = tf.concat([data["view1"], data["view2"]], axis=0)
    trainable = {id(v) for v in model.trainable_variables}
    records = []
    for _ in range(steps):
        forward = _forward(model, images, config.loss.temperature, config.loss.hidden_norm)
        model.reset_metrics()
        logs = model.train_on_batch(x=data, return_dict=True)
        scalars = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in logs.items()}
        records.append(
            {
                "scalars": scalars,
                "forward": forward,
                "w": {n: v.numpy() for n, v in named.items()},
                "g": {n: gradients[id(v)].numpy() for n, v in named.items() if id(v) in trainable},
            }
        )
    optimizer = model.optimizer
    momentum = {
        n: optimizer.velocities[optimizer._get_variable_index(v)].numpy()
        for n, v in named.items()
        if id(v) in trainable
    }
    return records, momentum


def restart(model, start, perturb_seed=None):
    """Puts every variable back to `start` and zeroes the optimizer's state; with
    `perturb_seed`, each nonzero trainable value moves one float32 spacing up or down
    (signs from the seed): an initial state float32 arithmetic cannot tell apart."""
    import numpy as np

    rng = None if perturb_seed is None else np.random.default_rng(perturb_seed)
    trainable = {id(v) for v in model.trainable_variables}
    for variable, value in zip(model.variables, start):
        if rng is not None and id(variable) in trainable:
            value = np.asarray(value, np.float32)
            direction = np.where(rng.random(value.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
            value = np.where(value != 0, np.nextafter(value, direction), value)
        variable.assign(value)
    for variable in model.optimizer.variables:
        variable.assign(np.zeros_like(variable.numpy()))


def rounding_spread(records, momentum, perturbed):
    """Per compared array, the largest |perturbed run - our run| element by element
    (the same nesting as `records` and `momentum`)."""
    import numpy as np

    def spread(ours, others):
        return np.max(
            [np.abs(o.astype(np.float64) - ours.astype(np.float64)) for o in others], axis=0
        )

    out = []
    for t, record in enumerate(records):
        entry = {}
        for part in ("forward", "w", "g"):
            entry[part] = {
                n: spread(a, [p[0][t][part][n] for p in perturbed]) for n, a in record[part].items()
            }
        out.append(entry)
    m = {n: spread(a, [p[1][n] for p in perturbed]) for n, a in momentum.items()}
    return out, m


class Checks:
    """Collects one line per check."""

    def __init__(self, verbose=False):
        self.failures = 0
        self.count = 0
        self.verbose = verbose

    def line(self, ok, text):
        self.count += 1
        self.failures += not ok
        print(("ok   " if ok else "FAIL ") + text, flush=True)


def _stored(fixture, name, array):
    """Our full array reduced to the entries the fixture stores for `name`."""
    key = "sample_idx/" + name
    if key in fixture.outputs:
        return array.reshape(-1)[fixture.outputs[key]]
    return array


def gradient_tolerance(fixture):
    f = fixture.flag
    positions = 2 * int(f["train_batch_size"]) * int(f["image_size"]) ** 2
    derived = GRADIENT_CANCELLATION * math.sqrt(positions) * UNIT_ROUNDOFF
    return max(derived, 1e-3 * max(1.0, math.sqrt(positions / 32768)))


# The fixture's scalar names -> simclr_tf's log names.
SCALARS = (
    ("learning_rate", "learning_rate"),
    ("contrast_loss", "contrast_loss"),
    ("contrast_entropy", "contrast_entropy"),
    ("supervised_loss", "probe_loss"),
    ("weight_decay", "weight_decay"),
    ("total_loss", "loss"),
)
ACCURACIES = (("contrast_acc", "contrast_acc"), ("supervised_acc", "probe_acc"))


def check_all(fixture, initial, records, momentum, checks, spread=None):
    """Every check of the steps in `records` against the fixture; `initial` holds our
    variables' values before step 1 (float64, by reference name); `spread` is
    `rounding_spread`'s, or None for none."""
    import numpy as np

    if spread is None:
        zero = lambda d: {n: np.zeros_like(a, dtype=np.float64) for n, a in d.items()}  # noqa: E731
        spread = (
            [{part: zero(r[part]) for part in ("forward", "w", "g")} for r in records],
            zero(momentum),
        )
    step_spread, momentum_spread = spread

    out = fixture.outputs
    tol = gradient_tolerance(fixture)
    print(
        f"tolerances: scalars {SCALAR_TOLERANCE:g} relative, forward {FORWARD_TOLERANCE:g} "
        f"of max|ref|, gradients/updates/momentum {tol:.2g} (derived; see --help)"
    )
    names = [v["name"] for v in fixture.manifest["variables"]]
    trainable = [v["name"] for v in fixture.manifest["variables"] if v["trainable"]]
    for t, record in enumerate(records, start=1):
        s = record["scalars"]
        sp = step_spread[t - 1]
        for ref_name, our_name in SCALARS:
            key = f"scalars/{ref_name}"
            if key not in out or our_name not in s:
                if key in out and ref_name == "supervised_loss":
                    checks.line(False, f"step {t} {ref_name}: simclr_tf logged no {our_name}")
                continue
            ref = float(out[key][t - 1])
            error = abs(s[our_name] - ref) / max(abs(ref), 1e-30)
            checks.line(
                error <= SCALAR_TOLERANCE,
                f"step {t} {ref_name}: {s[our_name]:.8g} vs {ref:.8g} (rel {error:.1e})",
            )
        for ref_name, our_name in ACCURACIES:
            key = f"scalars/{ref_name}"
            if key in out and our_name in s:
                ref = float(out[key][t - 1])
                checks.line(
                    abs(s[our_name] - ref) < 1e-6,
                    f"step {t} {ref_name}: {s[our_name]:.4f} vs {ref:.4f}",
                )
        for name, ours in record["forward"].items():
            key = f"fwd{t}/{name}"
            if key not in out:
                continue
            ref = out[key].astype(np.float64)
            beyond = _beyond_spread(ours, ref, sp["forward"][name])
            error = beyond.max() / max(np.abs(ref).max(), 1e-30)
            checks.line(
                ours.shape == ref.shape and error <= FORWARD_TOLERANCE,
                f"step {t} forward {name} {list(ref.shape)}: {error:.1e} of max|ref|",
            )
        _check_group(
            fixture,
            checks,
            f"step {t} gradients g{t}",
            record["g"],
            sp["g"],
            f"g{t}",
            trainable,
            tol,
        )
        _check_updates(fixture, checks, t, record["w"], sp["w"], initial, names, tol)
    _check_group(
        fixture,
        checks,
        "momentum after step 3 (m3)",
        momentum,
        momentum_spread,
        "m3",
        trainable,
        tol,
    )


def _beyond_spread(mine, ref, spread):
    """|mine - ref| less what rounding alone moved our own result (SPREAD_FACTOR x
    the perturbed runs' spread), element by element, never below 0."""
    import numpy as np

    difference = np.abs(np.asarray(mine, np.float64) - np.asarray(ref, np.float64))
    return np.maximum(difference - SPREAD_FACTOR * spread, 0.0)


def _check_group(fixture, checks, what, ours, spread, prefix, names, tol):
    """max over variables of max|ours - ref| / max|ref| on the stored entries, each
    difference less its rounding spread (`_beyond_spread`)."""
    import numpy as np

    worst = []
    for n in names:
        ref = fixture.outputs.get(f"{prefix}/{n}")
        if ref is None:
            continue
        mine = _stored(fixture, n, ours[n]).astype(np.float64)
        beyond = _beyond_spread(mine, ref, _stored(fixture, n, spread[n]))
        scale = np.abs(ref).max()
        error = beyond.max() / scale if scale > 0 else beyond.max()
        worst.append((error, n))
    worst.sort(reverse=True)
    error = worst[0][0] if worst else float("inf")
    checks.line(error <= tol, f"{what}: {len(worst)} variables, worst {error:.1e} ({worst[0][1]})")
    if checks.verbose:
        for e, n in worst[:5]:
            print(f"       {e:.2e} {n}")


def _check_updates(fixture, checks, t, weights, spread, initial, names, tol):
    """Each variable after step t: its update w<t> - w0 on the stored entries (beyond
    one float32 spacing of the reference value and the rounding spread) and the whole
    tensor's update norm (beyond the norm of the spread, which bounds how far rounding
    moved our norm: | |a| - |b| | <= |a - b|)."""
    import numpy as np

    out = fixture.outputs
    worst, norms = [], []
    for n in names:
        ref = out[f"w{t}/{n}"].astype(np.float64)
        mine_full = weights[n].astype(np.float64)
        mine = _stored(fixture, n, mine_full)
        start = _stored(fixture, n, initial[n])
        update = np.abs(ref - start).max()
        beyond = _beyond_spread(mine, ref, _stored(fixture, n, spread[n]))
        excess = np.maximum(beyond - np.spacing(np.abs(ref).astype(np.float32)), 0)
        error = excess.max() / update if update > 0 else excess.max()
        worst.append((error, n))
        stats_key = f"stats/dw{t}/{n}"
        if stats_key in out:
            ref_norm = math.sqrt(out[stats_key][1])
            our_norm = float(np.linalg.norm(mine_full - initial[n]))
            slack = SPREAD_FACTOR * float(np.linalg.norm(spread[n]))
            rel = max(abs(our_norm - ref_norm) - slack, 0.0)
            rel = rel / ref_norm if ref_norm > 0 else rel
            norms.append((rel, n))
    worst.sort(reverse=True)
    checks.line(
        worst[0][0] <= tol,
        f"step {t} variables w{t}: {len(worst)} (BN moving statistics included), worst "
        f"update error {worst[0][0]:.1e} ({worst[0][1]})",
    )
    if norms:
        norms.sort(reverse=True)
        checks.line(
            norms[0][0] <= tol,
            f"step {t} update norms |w{t} - w0|: {len(norms)} variables, worst {norms[0][0]:.1e} "
            f"({norms[0][1]})",
        )
    if checks.verbose:
        for e, n in worst[:5]:
            print(f"       {e:.2e} {n}")


def check(fixture_dir, base_config, verbose=False, perturbed_runs=0):
    """Runs every check; returns (failures, checks)."""
    import numpy as np

    fixture = read_fixture(fixture_dir)
    config = fixture_config(fixture, base_config)
    model, named = build(fixture, config)
    initial = {n: v.numpy().astype(np.float64) for n, v in named.items()}
    checks = Checks(verbose)
    checks.line(
        len(named) == len(fixture.manifest["variables"]),
        f"{len(named)} of {len(fixture.manifest['variables'])} reference variables converted "
        f"({sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} trainable "
        f"parameters, reference {fixture.manifest.get('num_params_trainable', '?'):,})",
    )
    start = [v.numpy() for v in model.variables]
    records, momentum = run_steps(fixture, model, named, config)
    perturbed = []
    for seed in range(1, perturbed_runs + 1):
        restart(model, start, perturb_seed=seed)
        perturbed.append(run_steps(fixture, model, named, config))
    spread = rounding_spread(records, momentum, perturbed) if perturbed else None
    if perturbed:
        print(
            f"rounding spread: {perturbed_runs} runs from initial states one float32 spacing away"
        )
    check_all(fixture, initial, records, momentum, checks, spread)
    return checks.failures, checks.count


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Before TensorFlow loads (nothing above imports it).
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if FLAGS.onednn else "0"
    os.environ["TF_DETERMINISTIC_OPS"] = "1"
    print(
        f"numeric environment: TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']}, "
        "TF_DETERMINISTIC_OPS=1"
    )
    from simclr_tf import config as cfg

    try:
        base = simclr_main.config_from_flags(FLAGS)
        base = dataclasses.replace(
            base, run=dataclasses.replace(base.run, model_dir=tempfile.mkdtemp())
        )
        failures, count = check(FLAGS.fixture, base, FLAGS.verbose, FLAGS.perturbed_runs)
    except (FixtureError, cfg.ConfigError, FileNotFoundError) as error:
        print(f"check_reference_step: error: {error}", file=sys.stderr)
        return EXIT_BAD_FIXTURE
    print(f"check_reference_step: {count - failures} of {count} checks hold")
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
