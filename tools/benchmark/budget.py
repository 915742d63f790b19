"""`budget`: pretraining for a wall-clock budget, then kNN and linear-eval accuracy."""

import time

from tools.benchmark.common import cifar_config
from tools.benchmark.machine import precisions
from tools.benchmark.options import FLAGS


def _warmup_epochs(steps):
    """One epoch of warmup (the CPU recipe's), but at most a tenth of the steps (as a
    `--time_budget` run plans it), so a short run still completes its cosine decay."""
    return min(1.0, 0.1 * steps * FLAGS.batch / 50000)


def bench_budget():
    """Pretrain for a wall-clock budget (or --steps), then kNN and linear eval, per
    precision; then the same evaluations of a random-init encoder."""
    import tempfile

    import keras

    from simclr_tf import train

    rows = []
    with tempfile.TemporaryDirectory() as root:
        for label, precision in precisions():
            keras.mixed_precision.set_global_policy("float32")
            start = time.perf_counter()
            # The run plans its own length for the budget (simclr_tf/time_budget.py), its
            # final kNN evaluation included, as `--time_budget` does.
            length = (
                {"train_steps": FLAGS.steps, "warmup_epochs": _warmup_epochs(FLAGS.steps)}
                if FLAGS.steps
                else {"time_budget": f"{FLAGS.budget_minutes}m", "warmup_epochs": 1.0}
            )
            model, pre = train.run(
                cifar_config("pretrain", f"{root}/pre_{precision}", precision, **length)
            )
            steps = pre["global_step"]
            if FLAGS.steps:
                warmup_steps = round(length["warmup_epochs"] * 50000 / FLAGS.batch)
            else:
                warmup_steps = int(model.lr_schedule.state()["warmup"])
            # The schedule must have finished: warmup, then cosine decay to 0 at `steps`.
            final_lr = float(model.optimizer.learning_rate)
            pretrain_s = time.perf_counter() - start
            init = f"{root}/pre_{precision}"
            evaluated_in = FLAGS.eval_precision or precision
            knn = pre["knn_acc"] if evaluated_in == precision else _knn(root, evaluated_in, init)
            rows.append(
                {
                    "impl": "simclr_tf budget, pretrained",
                    "precision": label,
                    "eval_precision": evaluated_in,
                    "knn_acc": knn,
                    "pretrain_steps": steps,
                    "pretrain_s": pretrain_s,
                    "budget_s": FLAGS.budget_minutes * 60 if not FLAGS.steps else None,
                    "warmup_steps": warmup_steps,
                    "final_learning_rate": final_lr,
                    "images_per_s": steps * FLAGS.batch / pretrain_s,
                    "linear_eval_acc": _linear_eval(root, evaluated_in, init, f"lin_{precision}"),
                }
            )
        if FLAGS.random_init:
            # The same kNN and linear evaluation of an untrained encoder.
            precision = FLAGS.eval_precision or precisions()[0][1]
            rows.append(
                {
                    "impl": "simclr_tf budget, random init",
                    "precision": precision,
                    "eval_precision": precision,
                    "knn_acc": _knn(root, precision, None),
                    "linear_eval_acc": _linear_eval(root, precision, None, "lin_random"),
                }
            )
    return rows


def _knn(root, precision, init):
    """kNN accuracy of the encoder in checkpoint dir `init` (None: a seeded random init)."""
    import keras

    from simclr_tf import checkpoints, evaluation, job_evaluation, run_setup
    from simclr_tf.models import builders

    config = cifar_config("pretrain", f"{root}/knn", precision)
    _, source = run_setup.setup(config)  # precision policy and seed, as a training job has
    bank, query = job_evaluation.knn_datasets(config, source)
    encoder = builders.pretrain_model(config, num_classes=0).encoder
    if init:
        checkpoints.restore_parts({"encoder": encoder}, init)
    knn = evaluation.knn_accuracy(
        encoder, bank(), query(), source.num_classes, config.run.knn_k, config.run.knn_temperature
    )
    keras.mixed_precision.set_global_policy("float32")
    return knn


def _linear_eval(root, precision, init, name):
    """Linear eval in `precision` of the encoder in `init`, in its own run directory
    `name` (one per pretrained encoder: a shared one would resume the other's run)."""
    import keras

    from simclr_tf import train

    keras.mixed_precision.set_global_policy("float32")
    linear_steps = FLAGS.linear_epochs * 50000 // FLAGS.batch
    _, lin = train.run(
        cifar_config(
            "linear_eval",
            f"{root}/{name}",
            precision,
            train_steps=linear_steps,
            init_checkpoint=init,
        )
    )
    return lin["eval_accuracy"]
