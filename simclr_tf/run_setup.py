"""What a run needs before it builds anything: the precision and CPU kernel choices
for this hardware, the distribution strategy and the data source, in the order
TensorFlow needs them, with every split the run will read checked first.
"""

import dataclasses

import keras

from simclr_tf import distributed, hardware
from simclr_tf.config import Config, ConfigError
from simclr_tf.data import DataError, open_source


def setup(config: Config):
    """Precision policy, strategy and data source, in the order TF needs them."""
    r = config.run
    if r.num_logical_devices > 1:
        distributed.split_cpu(r.num_logical_devices)
    keras.mixed_precision.set_global_policy(r.precision)
    # Multi-worker collectives must be configured before other TF work, so the
    # strategy comes first; the source is opened outside its scope, so its counters
    # are plain host variables.
    strategy = distributed.make_strategy(r.strategy, r.tpu, r.num_logical_devices)
    # Weight initialisation follows the seed too, so two runs that differ only in one
    # setting (precision, say) start from the same weights and compare pair by pair.
    keras.utils.set_random_seed(config.data.seed)
    if config.data.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"batch_size {config.data.batch_size} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    source = open_source(
        config.data.dataset,
        config.data.data_dir,
        strict=config.data.strict_decoding,
        max_pixels=config.data.max_image_pixels,
    )
    check_splits(config, source)
    return strategy, source


def check_splits(config: Config, source):
    """Every split the run will read exists, before any training: a labelled source is
    evaluated on `eval_split` in every mode, so a missing one stops every mode alike."""
    d = config.data
    source.check_split(d.train_split)
    if source.labeled and d.eval_split is not None and d.eval_split not in source.split_sizes:
        raise DataError(
            f"{source.name}: no eval split {d.eval_split!r} (available: "
            f"{', '.join(sorted(source.split_sizes))}); pass --eval_split=NAME, or "
            "--eval_split= to train without evaluation"
        )


def for_hardware(config: Config, hw=None):
    """The config with `--precision=auto` and the CPU speed rules resolved for `hw`
    (default: this machine), and the record of what was chosen and why."""
    hw = hardware.detect(config.run.strategy) if hw is None else hw
    resolved = hardware.resolve(config.run.precision, config.model.matmul_kernel_grad, hw)
    config = dataclasses.replace(
        config,
        run=dataclasses.replace(config.run, precision=resolved["precision"]),
        model=dataclasses.replace(config.model, matmul_kernel_grad=resolved["matmul_kernel_grad"]),
    )
    return config, resolved
