"""What the machine runs natively, and the settings that follow from it.

bf16 pays only where the hardware has bf16 dot products: AVX-512 BF16 or AMX on a CPU,
compute capability 8.0+ on a GPU, every TPU. Elsewhere oneDNN emulates it, and on an
AVX2-only CPU a bf16 step measured about 6x slower than float32 (BENCHMARKS.md). So
`--precision=auto` (the default) asks the hardware, and the CPU speed rules tuned on
one kind of CPU (the bf16 patch-matmul kernel gradient of `conv.py`) switch on only on
that kind. Detection is a plain record (`Hardware`) so tests can hand in any machine.

TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI, BF16
or AMX; on an AVX2 CPU it runs convolutions through Eigen, and a float32 step measured
2.1x slower than with oneDNN (BENCHMARKS.md). `use_onednn_on_avx2` (called when the
package is imported, before TensorFlow) turns oneDNN on there unless the user set
`TF_ENABLE_ONEDNN_OPTS` themselves.

`ONEDNN_MAX_CPU_ISA` caps the instructions oneDNN uses (`AVX2` makes an AVX-512 CPU's
kernels behave like an AVX2 CPU's); it is read as part of the hardware. TensorFlow
still routes bf16 ops to oneDNN by the CPU's own flags, so under such a cap bf16
kernels fail to build (`bf16_blocked`).
"""

import dataclasses
import os
import sys

from simclr_tf.config import ConfigError

# oneDNN's ISA limits in increasing order, with the aliases it accepts
# (oneDNN's `dnnl_cpu_isa_t`).
ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
)
_ONEDNN_ALIASES = {
    "AVX512_CORE_FP16": "AVX10_1_512",
    "AVX512_CORE_AMX": "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16",
}
# The lowest oneDNN limit at which each CPU feature is used.
_FEATURE_ISA = {
    "avx_vnni": "AVX2_VNNI",
    "avx512_vnni": "AVX512_CORE_VNNI",
    "avx512_bf16": "AVX512_CORE_BF16",
    "amx_tile": "AVX10_1_512_AMX",
    "amx_int8": "AVX10_1_512_AMX",
    "amx_bf16": "AVX10_1_512_AMX",
}
# CPU features with which TensorFlow turns oneDNN on by itself (TF 2.9 release notes:
# "CPUs with neural-network-focused hardware features such as AVX512_VNNI, AVX512_BF16,
# AMX").
_TF_ONEDNN_FEATURES = ("avx_vnni", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# Ratings of the CPU flags benchmark tables record.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# Whether `use_onednn_on_avx2` changed TensorFlow's default in this process.
onednn_set_by_package = False


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The devices a run computes on; `accelerator` is "cpu", "gpu" or "tpu"."""

    accelerator: str = "cpu"
    cpu_model: str = "unknown"
    cpu_flags: frozenset = frozenset()
    cores: int = 1
    onednn_max_isa: str | None = None  # ONEDNN_MAX_CPU_ISA, upper-cased; None: no cap
    gpu_capabilities: tuple[tuple[int, int], ...] = ()  # one (major, minor) per GPU
    onednn_opts: str | None = None  # TF_ENABLE_ONEDNN_OPTS as the run sees it

    def cpu_has(self, feature):
        """The CPU has `feature` and oneDNN is allowed to use it."""
        if feature not in self.cpu_flags:
            return False
        limit = _isa_rank(self.onednn_max_isa)
        needed = _FEATURE_ISA.get(feature)
        return limit is None or needed is None or limit >= ONEDNN_ISAS.index(needed)

    @property
    def native_bf16_cpu(self):
        return self.cpu_has("avx512_bf16") or self.cpu_has("amx_bf16")

    @property
    def tf_onednn_default(self):
        """TensorFlow turns oneDNN on by itself on this kind of CPU (under an ISA limit:
        on the kind of CPU the limit stands for)."""
        return any(self.cpu_has(f) for f in _TF_ONEDNN_FEATURES)

    @property
    def bf16_blocked(self):
        """bf16 cannot run: the CPU has it, so TensorFlow sends bf16 ops to oneDNN, but
        ONEDNN_MAX_CPU_ISA keeps oneDNN from it (its kernels fail to build)."""
        has = bool({"avx512_bf16", "amx_bf16"} & self.cpu_flags)
        return (
            self.accelerator == "cpu"
            and has
            and not self.native_bf16_cpu
            and self.onednn_opts != "0"
        )

    @property
    def cpu_kind(self):
        """The CPU kinds benchmarks are grouped by."""
        if self.native_bf16_cpu:
            return "AVX-512 BF16" + (" + AMX" if self.cpu_has("amx_bf16") else "")
        return "AVX2" if "avx2" in self.cpu_flags else "other x86/ARM"

    def describe(self):
        """A JSON-ready record for config.json and benchmark results."""
        return {
            "accelerator": self.accelerator,
            "cpu_model": self.cpu_model,
            "cpu_kind": self.cpu_kind,
            "cores": self.cores,
            "isa_flags": [f for f in ISA_FLAGS if f in self.cpu_flags],
            "onednn_max_cpu_isa": self.onednn_max_isa,
            "tf_enable_onednn_opts": self.onednn_opts,
            "gpu_capabilities": [f"{a}.{b}" for a, b in self.gpu_capabilities],
        }


def _isa_rank(isa):
    if isa is None or isa in ("ALL", "DEFAULT", ""):
        return None
    isa = _ONEDNN_ALIASES.get(isa, isa)
    return ONEDNN_ISAS.index(isa) if isa in ONEDNN_ISAS else None


def parse_cpuinfo(text):
    """(model name, set of flags) of the first processor in /proc/cpuinfo's text."""
    model, cpu_flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not cpu_flags:  # x86, ARM
            cpu_flags = frozenset(value.split())
    return model, cpu_flags


def read_cpuinfo(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return "unknown", frozenset()


def use_onednn_on_avx2(environ=None, cpuinfo_path="/proc/cpuinfo"):
    """Turns TensorFlow's oneDNN kernels on for an AVX2 + FMA CPU where TensorFlow leaves
    them off (no VNNI, BF16 or AMX; or ONEDNN_MAX_CPU_ISA stands for such a CPU). Only
    before TensorFlow is imported: afterwards the setting would have no effect yet be
    recorded (config.json) as if it had, so the process environment is left as it is.
    Returns whether it set the variable."""
    global onednn_set_by_package
    process = environ is None
    environ = os.environ if process else environ
    if "TF_ENABLE_ONEDNN_OPTS" in environ:
        return False
    if process and "tensorflow" in sys.modules:
        from absl import logging

        logging.info(
            "TensorFlow was imported before simclr_tf: TF_ENABLE_ONEDNN_OPTS left unset "
            "(TensorFlow's own default applies)"
        )
        return False
    _, cpu_flags = read_cpuinfo(cpuinfo_path)
    limit = environ.get("ONEDNN_MAX_CPU_ISA") or None
    hw = Hardware(cpu_flags=cpu_flags, onednn_max_isa=limit.upper() if limit else None)
    if not {"avx2", "fma"} <= cpu_flags or hw.tf_onednn_default:
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    onednn_set_by_package = onednn_set_by_package or process
    return True


def detect(strategy="default", environ=None, cpuinfo_path="/proc/cpuinfo"):
    """This machine, as the run with `strategy` will use it (lists TF's physical
    devices, which needs no TF context)."""
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    model, cpu_flags = read_cpuinfo(cpuinfo_path)
    limit = environ.get("ONEDNN_MAX_CPU_ISA") or None
    capabilities = []
    if strategy != "tpu":
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    accelerator = "tpu" if strategy == "tpu" else "gpu" if capabilities else "cpu"
    return Hardware(
        accelerator,
        model,
        cpu_flags,
        os.cpu_count() or 1,
        limit.upper() if limit else None,
        tuple(capabilities),
        environ.get("TF_ENABLE_ONEDNN_OPTS"),
    )


def auto_precision(hw: Hardware):
    """(Keras policy name, one-line reason) for `--precision=auto`."""
    if hw.accelerator == "tpu":
        return "mixed_bfloat16", "TPU: bf16 matrix units"
    if hw.accelerator == "gpu":
        oldest = min(hw.gpu_capabilities)
        shown = f"compute capability {oldest[0]}.{oldest[1]}"
        if oldest >= (8, 0):
            return "mixed_bfloat16", f"GPU with {shown}: native bf16"
        if oldest >= (7, 0):
            return "mixed_float16", f"GPU with {shown}: float16 tensor cores, no bf16"
        return "float32", f"GPU with {shown}: no tensor cores"
    if hw.native_bf16_cpu:
        feature = "AMX" if hw.cpu_has("amx_bf16") else "AVX-512 BF16"
        return "mixed_bfloat16", f"CPU with {feature}: native bf16 dot products"
    capped = (
        f" (ONEDNN_MAX_CPU_ISA={hw.onednn_max_isa})"
        if hw.onednn_max_isa and "avx512_bf16" in hw.cpu_flags
        else ""
    )
    return "float32", (
        f"CPU without AVX-512 BF16 or AMX{capped}: bf16 would be emulated, "
        "several times slower than float32"
    )


def matmul_kernel_grad_applies(hw: Hardware):
    """Where `conv.py`'s bf16 patch-matmul kernel gradient was measured to pay: a CPU
    with AVX-512 BF16 but no AMX (Zen 4). Never on GPU/TPU, AMX or emulated bf16."""
    return hw.accelerator == "cpu" and hw.cpu_has("avx512_bf16") and not hw.cpu_has("amx_bf16")


def resolve(precision, matmul_kernel_grad, hw: Hardware):
    """The settings a run uses on `hw`, with the reasons, as a JSON-ready dict."""
    if precision == "auto":
        chosen, reason = auto_precision(hw)
        reason = f"auto: {reason}"
    else:
        chosen, reason = precision, "set by --precision"
    if chosen == "mixed_bfloat16" and hw.bf16_blocked:
        raise ConfigError(
            f"bf16 cannot run here: ONEDNN_MAX_CPU_ISA={hw.onednn_max_isa} keeps oneDNN "
            "from this CPU's bf16 instructions, which TensorFlow still sends bf16 ops to; "
            "use --precision=float32 (or auto), unset the limit, or set "
            "TF_ENABLE_ONEDNN_OPTS=0"
        )
    kernel_grad = bool(
        matmul_kernel_grad and chosen == "mixed_bfloat16" and matmul_kernel_grad_applies(hw)
    )
    return {
        "precision": chosen,
        "precision_reason": reason,
        "matmul_kernel_grad": kernel_grad,
        "hardware": hw.describe(),
    }
