"""`--precision=auto` and the CPU speed rules, for machines handed in as records.

The CPU flag sets are those /proc/cpuinfo lists on the two kinds of 2-core machine the
project runs on (AMD EPYC Zen 3: AVX2 + FMA; Zen 4: AVX-512 with BF16) and on an Intel
Sapphire Rapids (AMX), trimmed to the flags that matter plus a few others.
"""

import dataclasses

import keras
import pytest

from simclr_tf import hardware, run_setup
from simclr_tf.config import Config, ModelConfig, RunConfig
from simclr_tf.models import builders, conv

ZEN3 = frozenset("fpu sse4_2 avx avx2 fma f16c bmi2 sha_ni vaes".split())
ZEN4 = ZEN3 | frozenset("avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16".split())
SAPPHIRE_RAPIDS = ZEN4 | frozenset("amx_bf16 amx_tile amx_int8 avx512_fp16".split())

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: {flags}

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: {flags}
"""


def cpu(flags, limit=None):
    return hardware.Hardware("cpu", "test CPU", flags, 2, limit)


@pytest.mark.parametrize(
    "hw, precision",
    [
        (cpu(ZEN3), "float32"),
        (cpu(ZEN4), "mixed_bfloat16"),
        (cpu(ZEN4, "AVX2"), "float32"),  # oneDNN held to AVX2: bf16 would be emulated
        (cpu(ZEN4, "AVX512_CORE"), "float32"),
        (cpu(ZEN4, "AVX512_CORE_BF16"), "mixed_bfloat16"),
        (cpu(SAPPHIRE_RAPIDS), "mixed_bfloat16"),
        (cpu(SAPPHIRE_RAPIDS, "AVX512_CORE_AMX"), "mixed_bfloat16"),  # an alias
        (cpu(frozenset()), "float32"),  # nothing known: the safe choice
        (hardware.Hardware("gpu", "x", ZEN3, 2, None, ((8, 0),)), "mixed_bfloat16"),
        (hardware.Hardware("gpu", "x", ZEN3, 2, None, ((8, 6), (7, 0))), "mixed_float16"),
        (hardware.Hardware("gpu", "x", ZEN3, 2, None, ((7, 5),)), "mixed_float16"),
        (hardware.Hardware("gpu", "x", ZEN3, 2, None, ((6, 1),)), "float32"),
        (hardware.Hardware("tpu", "x", ZEN3, 2), "mixed_bfloat16"),
    ],
)
def test_auto_precision_for_each_kind_of_hardware(hw, precision):
    chosen, reason = hardware.auto_precision(hw)
    assert chosen == precision
    assert reason and "\n" not in reason


def test_reason_names_an_isa_cap_that_hides_bf16():
    _, reason = hardware.auto_precision(cpu(ZEN4, "AVX2"))
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in reason


@pytest.mark.parametrize(
    "hw, applies",
    [
        (cpu(ZEN4), True),  # where it was measured
        (cpu(ZEN3), False),  # bf16 emulated
        (hardware.Hardware("cpu", "x", ZEN4, 2, "AVX2", (), "0"), False),  # emulated by Eigen
        (cpu(SAPPHIRE_RAPIDS), False),  # AMX: not measured
        (hardware.Hardware("gpu", "x", ZEN4, 2, None, ((8, 0),)), False),
        (hardware.Hardware("tpu", "x", ZEN4, 2), False),
    ],
)
def test_kernel_gradient_rule_only_on_the_cpu_it_was_measured_on(hw, applies):
    assert hardware.matmul_kernel_grad_applies(hw) is applies
    resolved = hardware.resolve("mixed_bfloat16", True, hw)
    assert resolved["matmul_kernel_grad"] is applies
    # Never in float32, whatever the CPU; never when turned off.
    assert hardware.resolve("float32", True, hw)["matmul_kernel_grad"] is False
    assert hardware.resolve("mixed_bfloat16", False, hw)["matmul_kernel_grad"] is False


def test_explicit_precision_wins_over_the_hardware():
    resolved = hardware.resolve("mixed_bfloat16", True, cpu(ZEN3))
    assert resolved["precision"] == "mixed_bfloat16"
    assert resolved["precision_reason"] == "set by --precision"
    assert hardware.resolve("float32", True, cpu(ZEN4))["precision"] == "float32"
    auto = hardware.resolve("auto", True, cpu(ZEN4))
    assert auto["precision"] == "mixed_bfloat16" and auto["precision_reason"].startswith("auto:")


def test_detect_reads_cpuinfo_and_the_onednn_limit(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags=" ".join(sorted(ZEN4))))
    hw = hardware.detect(
        "one_device", environ={"ONEDNN_MAX_CPU_ISA": "avx2"}, cpuinfo_path=str(path)
    )
    assert hw.cpu_model == "AMD EPYC 7B13" and hw.cpu_flags == ZEN4
    assert hw.onednn_max_isa == "AVX2" and not hw.native_bf16_cpu
    assert hardware.detect("one_device", environ={}, cpuinfo_path=str(path)).native_bf16_cpu
    record = hw.describe()
    assert record["isa_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert record["onednn_max_cpu_isa"] == "AVX2" and record["cpu_kind"] == "AVX2"
    missing = hardware.detect("one_device", environ={}, cpuinfo_path=str(tmp_path / "none"))
    assert missing.cpu_flags == frozenset() and hardware.auto_precision(missing)[0] == "float32"


def _encoder_kernel_grad_layers(config):
    keras.mixed_precision.set_global_policy(config.run.precision)
    try:
        encoder = builders.build_encoder(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return [l for l in encoder.layers if isinstance(l, conv.Conv2D) and l.matmul_kernel_grad]


@pytest.mark.parametrize(
    "hw, precision, kernel_grad",
    [
        (cpu(ZEN4), "mixed_bfloat16", True),
        (cpu(ZEN3), "float32", False),
        (cpu(ZEN4, "AVX2"), "float32", False),
    ],
)
def test_run_config_resolved_for_the_hardware(hw, precision, kernel_grad):
    config = Config(run=RunConfig(precision="auto"), model=ModelConfig(depth=18))
    resolved_config, record = run_setup.for_hardware(config, hw)
    assert resolved_config.run.precision == record["precision"] == precision
    assert resolved_config.model.matmul_kernel_grad is kernel_grad
    assert record["hardware"]["cpu_kind"] == hw.cpu_kind
    # The encoder a run builds has the rule on in its convs only where it applies.
    assert bool(_encoder_kernel_grad_layers(resolved_config)) is kernel_grad
    # A user's explicit bf16 on an AVX2 CPU still gets no Zen 4 rule.
    forced = dataclasses.replace(config, run=RunConfig(precision="mixed_bfloat16"))
    forced_config, _ = run_setup.for_hardware(forced, cpu(ZEN3))
    assert forced_config.run.precision == "mixed_bfloat16"
    assert not _encoder_kernel_grad_layers(forced_config)


def test_onednn_turned_on_for_avx2_unless_the_user_chose(tmp_path):
    def environ_after(flags, environ):
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(flags=" ".join(sorted(flags))))
        changed = hardware.use_onednn_on_avx2(environ, str(path))
        return changed, environ

    assert environ_after(ZEN3, {}) == (True, {"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert environ_after(ZEN4, {}) == (False, {})  # TensorFlow's own default is on
    # Held to AVX2, a Zen 4 stands for a Zen 3: the rule applies as there.
    assert environ_after(ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX2"})[1]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert environ_after(ZEN3, {"TF_ENABLE_ONEDNN_OPTS": "0"}) == (
        False,
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert environ_after(frozenset({"sse4_2", "avx"}), {}) == (False, {})  # no AVX2 kernels


def test_bf16_under_an_isa_cap_that_hides_it_is_refused_in_one_line():
    capped = hardware.Hardware("cpu", "x", ZEN4, 2, "AVX2", (), "1")
    assert capped.bf16_blocked
    assert hardware.resolve("auto", True, capped)["precision"] == "float32"
    with pytest.raises(hardware.ConfigError, match="ONEDNN_MAX_CPU_ISA=AVX2"):
        hardware.resolve("mixed_bfloat16", True, capped)
    # With oneDNN off TensorFlow's own (emulated) bf16 kernels run; a real AVX2 CPU has
    # no bf16 for TensorFlow to route to oneDNN.
    assert not hardware.Hardware("cpu", "x", ZEN4, 2, "AVX2", (), "0").bf16_blocked
    assert not hardware.Hardware("cpu", "x", ZEN3, 2, "AVX2", (), "1").bf16_blocked
    assert not hardware.Hardware("cpu", "x", ZEN4, 2, None, (), "1").bf16_blocked


def test_the_onednn_setting_is_left_alone_once_tensorflow_is_loaded():
    """Held to AVX2 (where the package turns oneDNN on), importing simclr_tf first sets
    TF_ENABLE_ONEDNN_OPTS; importing it after TensorFlow must not, since TensorFlow has
    read its settings already and the value would be recorded without effect."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(ONEDNN_MAX_CPU_ISA="AVX2", TF_CPP_MIN_LOG_LEVEL="3")
    report = "import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"

    def after(imports):
        code = f"{imports}; {report}"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert after("import simclr_tf, tensorflow") == "1"
    assert after("import tensorflow, simclr_tf") == "None"
