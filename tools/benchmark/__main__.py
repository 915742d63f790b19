"""`python -m tools.benchmark MODE [flags]`: runs one mode, prints its JSON."""

import datetime
import json
import sys

from absl import app

# Before any mode imports TensorFlow (step's first line imports keras): on an AVX2 CPU
# the package turns oneDNN on only if it comes first (simclr_tf.hardware), and `step`
# compares against TensorFlow's defaults in a process of their own only then.
import simclr_tf  # noqa: F401
from tools.benchmark import (
    accuracy,
    budget,
    execution,
    fit,
    input_pipeline,
    kernel_grads,
    memory,
    peak,
    profile,
    search,
    step,
)
from tools.benchmark.machine import (
    commit,
    fma_peak_gflops,
    machine_name,
    peak_gflops,
    this_hardware,
)
from tools.benchmark.options import FLAGS
from tools.benchmark.report import append_markdown


def main(argv):
    modes = {
        "step": step.bench_step,
        "input": input_pipeline.bench_input,
        "fit": fit.bench_fit,
        "budget": budget.bench_budget,
        "memory": memory.bench_memory,
        "conv": kernel_grads.bench_conv,
        "execution": execution.bench_execution,
        "accuracy": accuracy.bench_accuracy,
        "search": search.bench_search,
        "profile": profile.bench_profile,
        "peak": peak.bench_peak,
    }
    if len(argv) != 2 or argv[1] not in modes:
        print(f"usage: python -m tools.benchmark {'|'.join(modes)} [flags]", file=sys.stderr)
        return 2
    mode = argv[1]
    if FLAGS.memory_worker:
        print(json.dumps(memory.memory_worker(FLAGS.memory_worker)))
        return 0
    if FLAGS.devices > 1:
        from simclr_tf import distributed

        distributed.split_cpu(FLAGS.devices)
    rows = modes[mode]()
    settings = {
        "depth": FLAGS.depth,
        "width": FLAGS.width,
        "batch": FLAGS.batch,
        "xla": FLAGS.xla,
        "devices": FLAGS.devices,
        "steps": FLAGS.steps,
        "seed": FLAGS.seed,
        "eval_precision": FLAGS.eval_precision,
        "warmup": FLAGS.warmup,
        "repeats": FLAGS.repeats,
        "rounds": FLAGS.rounds,
        "after_first_epoch": FLAGS.after_first_epoch,
        "batched_augment": FLAGS.batched_augment,
        "augment_jit_compile": FLAGS.augment_jit_compile,
        "matmul_kernel_grad": FLAGS.matmul_kernel_grad,
        "steps_per_execution": FLAGS.steps_per_execution,
    }
    result = {
        "mode": mode,
        "settings": settings,
        "machine": machine_name(),
        "hardware": this_hardware().describe(),
        "fma_peak_gflops": fma_peak_gflops(),
        "bf16_peak_gflops": peak_gflops("mixed_bfloat16"),
        "commit": commit(),
        "date": datetime.date.today().isoformat(),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=2)
    if FLAGS.append:
        append_markdown(mode, rows, "python -m tools.benchmark " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    app.run(main)
