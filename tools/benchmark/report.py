"""The benchmark table of each mode (appended to the history page only with --append)."""

import datetime
import os

from tools.benchmark.machine import commit, machine_name
from tools.benchmark.options import REPO

HISTORY = os.path.join("docs", "benchmarks-history.md")


def _gib(r, key):
    return f"{r[key] / 2**30:.2f}" if key in r else "-"


def _optional(r, key, fmt, suffix="", scale=1):
    return format(r[key] * scale, fmt) + suffix if key in r else "-"


# mode -> (the table's columns, one result row's cells)
_TABLES = {
    "step": (
        [
            "impl",
            "precision",
            "images/s",
            "views/s",
            "step s",
            "GFLOP/s",
            "share of nominal peak (fp32 FMA; bf16 dot product)",
            "share of a 4096^3 matmul's rate",
            "vs plain Keras fp32",
            "vs PyTorch fp32",
            "vs PyTorch bf16",
        ],
        lambda r: [
            r["impl"],
            r.get("precision", "-"),
            f"{r['images_per_s']:.1f}",
            f"{r['views_per_s']:.1f}",
            _optional(r, "step_s", ".3f"),
            _optional(r, "gflops_per_s", ".0f"),
            _optional(r, "nominal_peak_share", ".0%"),
            _optional(r, "matmul_share", ".0%"),
            _optional(r, "vs_plain_keras_float32", ".2f", "x"),
            _optional(r, "vs_pytorch_float32", ".2f", "x"),
            _optional(r, "vs_pytorch_bf16", ".2f", "x"),
        ],
    ),
    "input": (
        ["impl", "images/s", "views/s", "CPU ms per batch"],
        lambda r: [
            r["impl"],
            f"{r['images_per_s']:.1f}",
            f"{r['views_per_s']:.1f}",
            f"{r['cpu_ms_per_batch']:.1f}",
        ],
    ),
    "fit": (
        [
            "impl",
            "precision",
            "images/s",
            "views/s",
            "fit step s (mean, incl. checkpoint share)",
            "step alone s (mean)",
            "fit / step per round",
            "fit / step (median; 90% bootstrap interval)",
            "fit / step (of means)",
            "outside compiled fn ms per step",
            "CPU busy: fit / step alone",
        ],
        lambda r: [
            r["impl"],
            r["precision"],
            f"{r['images_per_s']:.1f}",
            f"{r['views_per_s']:.1f}",
            f"{r['step_s']:.3f}",
            f"{r['step_alone_s']:.3f}",
            ", ".join(f"{x:.2f}" for x in r["fit_vs_step_per_round"]),
            f"{r['fit_vs_step']:.2f}"
            + (
                " ({:.2f}-{:.2f})".format(*r["fit_vs_step_90pct"])
                if "fit_vs_step_90pct" in r
                else ""
            ),
            f"{r['step_alone_s'] / r['step_s']:.3f}",
            _optional(r, "outside_function_s", ".1f", scale=1e3),
            f"{r['cpu_share_fit']:.0%} / {r['cpu_share_step_alone']:.0%}"
            if "cpu_share_fit" in r
            else "-",
        ],
    ),
    "budget": (
        [
            "encoder",
            "precision",
            "evaluated in",
            "pretrain steps",
            "warmup steps",
            "final lr",
            "pretrain job s (incl. build, kNN)",
            "kNN acc",
            "linear eval acc",
        ],
        lambda r: [
            r["impl"],
            r["precision"],
            r["eval_precision"],
            r.get("pretrain_steps", "-"),
            r.get("warmup_steps", "-"),
            _optional(r, "final_learning_rate", ".2g"),
            _optional(r, "pretrain_s", ".0f"),
            f"{r['knn_acc']:.2%}",
            f"{r['linear_eval_acc']:.2%}",
        ],
    ),
    "memory": (
        [
            "measurement",
            "precision",
            "RSS after build GiB",
            "peak RSS GiB",
            "loss peak increase GiB",
            "one 2N x 2N float32 matrix GiB",
        ],
        lambda r: [
            r["impl"],
            r["precision"],
            _gib(r, "rss_after_build"),
            _gib(r, "peak_rss"),
            _gib(r, "peak_increase"),
            _gib(r, "logits_matrix_bytes"),
        ],
    ),
    "execution": (
        ["impl", "precision", "s/step, 1 per call", "s/step, N per call", "speedup", "rounds"],
        lambda r: [
            r["impl"],
            r["precision"],
            f"{r['step_s_one_per_call']:.4f}",
            f"{r['step_s_many_per_call']:.4f}",
            f"{r['speedup']:.3f}x",
            f"{r['rounds']} x {r['steps_per_round']} steps",
        ],
    ),
    "peak": (
        ["compute type", "4096^3 matmul GFLOP/s", "nominal peak GFLOP/s", "matmul / nominal"],
        lambda r: [
            r["precision"],
            f"{r['matmul_gflops']:.0f}",
            _optional(r, "nominal_peak_gflops", ".0f"),
            _optional(r, "matmul_vs_nominal", ".0%"),
        ],
    ),
    "profile": (
        [
            "precision",
            "step s (profiled)",
            "op type",
            "thread-ms per step",
            "ops per step",
            "share",
        ],
        lambda r: [
            r["precision"],
            f"{r['step_s']:.3f} ({r['profiled_step_s']:.3f})",
            r["op"],
            f"{r['thread_ms_per_step']:.1f}",
            f"{r['ops_per_step']:.0f}",
            f"{r['share_of_op_time']:.1%}",
        ],
    ),
    "conv": (
        [
            "conv (input -> output)",
            "layers",
            "native bf16 kernel grad ms",
            "patch matmul ms",
            "rule picks",
        ],
        lambda r: [
            r["impl"],
            r["layers"],
            f"{r['native_ms']:.1f}",
            f"{r['matmul_ms']:.1f}",
            r["rule_picks"],
        ],
    ),
}


def append_markdown(mode, rows, command):
    columns, cells = _TABLES[mode]
    lines = [
        f"\n### `{mode}` - {datetime.date.today().isoformat()} - {commit()} - {machine_name()}\n",
        f"Command: `{command}`\n",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
    with open(os.path.join(REPO, HISTORY), "a") as f:
        f.write("\n".join(lines) + "\n")
