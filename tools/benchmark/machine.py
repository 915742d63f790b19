"""What machine a benchmark ran on: CPU kind, FMA peak, precisions that can run, commit."""

import os
import sys

from tools.benchmark.options import FLAGS, REPO


def this_hardware():
    from simclr_tf import hardware

    return hardware.detect("one_device")


def machine_name():
    """One line: cores, CPU model and kind, and the oneDNN settings in force."""
    hw = this_hardware().describe()
    line = f"{hw['cores']} cores, {hw['cpu_model']} ({hw['cpu_kind']})"
    if hw["onednn_max_cpu_isa"]:
        line += f", ONEDNN_MAX_CPU_ISA={hw['onednn_max_cpu_isa']}"
    if hw["tf_enable_onednn_opts"] is not None:
        line += f", TF_ENABLE_ONEDNN_OPTS={hw['tf_enable_onednn_opts']}"
    return line


def _cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            return next(float(l.split(":", 1)[1]) for l in f if l.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None


def fma_peak_gflops():
    """float32 FMA peak of all cores: two 256-bit FMA pipes a core (Zen 3; Zen 4, whose
    AVX-512 runs as 256-bit halves; any CPU under AVX2 kernels), at the nominal clock."""
    mhz = _cpu_mhz()
    return (os.cpu_count() or 1) * mhz * 1e-3 * 2 * 8 * 2 if mhz else None


def peak_gflops(policy):
    """The nominal peak of the multiply-adds `policy` computes in: float32 FMA, or (bf16
    on a CPU with AVX-512 BF16) VDPBF16PS, whose two bf16 products a float32 lane make it
    twice the FMA peak on the same two 256-bit pipes (Zen 4). None where neither applies.
    A VM's cores may run above the nominal clock: `matmul_gflops` is what they reach."""
    peak = fma_peak_gflops()
    if peak is None or policy == "float32":
        return peak
    if policy == "mixed_bfloat16" and this_hardware().native_bf16_cpu:
        return 2 * peak
    return None


_MATMUL_RATES = {}


def matmul_gflops(policy, n=4096, repeats=5):
    """GFLOP/s of TensorFlow's n x n x n matmul in `policy`'s compute type (oneDNN's GEMM,
    the kernel closest to the machine's peak that TensorFlow has), best of `repeats`;
    the yardstick of a step's share of peak. None where bf16 cannot run. Cached."""
    if policy == "mixed_bfloat16" and this_hardware().bf16_blocked:
        return None
    if policy not in _MATMUL_RATES:
        import time

        import tensorflow as tf

        dtype = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32
        a = tf.cast(tf.random.stateless_normal([n, n], [1, 2]), dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], [3, 4]), dtype)
        product = tf.function(lambda: tf.linalg.matmul(a, b)[0, 0])
        product().numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            product().numpy()
            best = min(best, time.perf_counter() - start)
        _MATMUL_RATES[policy] = 2 * n**3 / best / 1e9
    return _MATMUL_RATES[policy]


def precisions():
    """--precisions resolved on this machine ("auto" -> its choice), deduplicated; bf16
    left out where its kernels cannot run (hardware.Hardware.bf16_blocked)."""
    from simclr_tf import hardware

    hw, chosen = this_hardware(), []
    for asked in FLAGS.precisions:
        precision = hardware.auto_precision(hw)[0] if asked == "auto" else asked
        if precision == "mixed_bfloat16" and hw.bf16_blocked:
            print(
                f"{asked}: bf16 kernels cannot run under ONEDNN_MAX_CPU_ISA="
                f"{hw.onednn_max_isa} on this CPU; skipped",
                file=sys.stderr,
            )
            continue
        label = f"auto ({precision})" if asked == "auto" else precision
        if precision not in [p for _, p in chosen]:
            chosen.append((label, precision))
    return chosen


def kernel_grad_for(precision):
    """--matmul_kernel_grad as a run resolves it on this machine."""
    from simclr_tf import hardware

    return hardware.resolve(precision, FLAGS.matmul_kernel_grad, this_hardware())[
        "matmul_kernel_grad"
    ]


def commit():
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
