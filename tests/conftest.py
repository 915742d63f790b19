"""Test setup: split the CPU into logical devices before TensorFlow initialises.

Multi-replica tests (MirroredStrategy over 2 or 4 replicas) then run on any machine.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import simclr_tf  # noqa: E402,F401  (before TensorFlow: it may turn oneDNN on)

# isort: split
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 4
REPO = pathlib.Path(__file__).resolve().parents[1]
# The prepared CIFAR-10 beside the repository; SIMCLR_TEST_TFDS_DIR points elsewhere.
SHARED_TFDS = pathlib.Path(
    os.environ.get("SIMCLR_TEST_TFDS_DIR", REPO.parent / "shared" / "data" / "tfds")
)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)]
)


def _bf16_kernels_run_here():
    from simclr_tf import hardware

    return not hardware.detect("one_device").bf16_blocked


# bf16 tests need bf16 kernels: emulated ones are fine (the tests are tiny), but under
# ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16 on a CPU that has bf16, TensorFlow's bf16
# kernels fail to build (simclr_tf.hardware.Hardware.bf16_blocked).
requires_bf16_kernels = pytest.mark.skipif(
    not _bf16_kernels_run_here(),
    reason="bf16 kernels cannot run under this ONEDNN_MAX_CPU_ISA on this CPU",
)


def cpu_devices(n):
    return [f"/cpu:{i}" for i in range(n)]


@pytest.fixture(scope="session")
def cifar_data_dir():
    """The prepared CIFAR-10 in ../shared/data/tfds, read the way a user reads TFDS."""
    if not (SHARED_TFDS / "cifar10").is_dir():
        pytest.fail(f"prepared CIFAR-10 not found under {SHARED_TFDS}")
    return str(SHARED_TFDS)
