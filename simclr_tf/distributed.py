"""Strategy construction: one device, Mirrored, MultiWorkerMirrored or TPU."""

import json
import os

import tensorflow as tf

from simclr_tf import keras_compat
from simclr_tf.config import ConfigError


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices; call before TF starts."""
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
        )
    except RuntimeError as error:  # TF already initialised: enough devices will do.
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing < num_devices:
            raise RuntimeError(
                f"cannot split the CPU into {num_devices} devices after TensorFlow started "
                f"({existing} exist)"
            ) from error


def _local_devices(limit=0):
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return devices[:limit] if limit > 0 else devices


def make_strategy(name, tpu=None, num_devices=0):
    """`default`: Mirrored over the local devices when there are several, else one device.

    `num_devices` > 0 uses only the first that many local devices.
    """
    if name == "multi_worker":  # before anything touches the TF context
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable")
        json.loads(os.environ["TF_CONFIG"])  # fail early on malformed JSON
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = _local_devices(num_devices)
    if name == "default":
        name = "mirrored" if len(devices) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0])
    if name == "mirrored":
        return keras_compat.mirrored_strategy(devices)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


def is_chief(strategy):
    """True on the worker that writes checkpoints, summaries and results.

    That is the `chief` task if the cluster has one, else worker 0, else (no cluster)
    this process.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster or resolver.task_type is None:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0
