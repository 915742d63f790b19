"""simclr_tf: SimCLR (v1 and v2) for TensorFlow 2 / Keras 3."""

from simclr_tf import hardware as _hardware

# Before anything imports TensorFlow: its oneDNN kernels on an AVX2 CPU (hardware.py).
_hardware.use_onednn_on_avx2()

__version__ = "0.1.0"
