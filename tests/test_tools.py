"""The tools users run beside training start and refuse bad input cleanly."""

import json
import pathlib
import subprocess
import sys

from conftest import REPO


def _in_a_process(code):
    """Runs `code` in a fresh Python at the repository root; its stdout. The benchmark's
    modules define absl flags that clash with other tools' in the test process."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_benchmark_module_imports():
    # In its own process: the benchmark defines absl flags on the global FLAGS.
    names = [
        p.stem for p in sorted((REPO / "tools" / "benchmark").glob("*.py")) if p.stem != "__main__"
    ]
    _in_a_process("; ".join(f"import tools.benchmark.{n}" for n in names))


def test_benchmark_without_a_mode_prints_its_usage_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "tools.benchmark"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    modes = "step|input|fit|budget|memory|conv|execution|accuracy|search|profile|peak"
    assert f"usage: python -m tools.benchmark {modes}" in result.stderr


def test_benchmark_modes_are_one_module_each():
    modes = {p.stem for p in pathlib.Path(REPO / "tools" / "benchmark").glob("*.py")}
    assert {"step", "input_pipeline", "fit", "budget", "memory", "kernel_grads"} <= modes


def test_launch_workers_without_flags_prints_its_usage_and_exits_2():
    result = subprocess.run(
        [sys.executable, "tools/launch_workers.py", "--num_workers=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "launch_workers.py --num_workers=2" in result.stderr


def test_scaling_model_counts_resnet50_and_scales_with_replicas():
    from tools import scaling_model

    params, flops = scaling_model.model_counts(50, 1.0, 224)
    # ResNet-50 at 224 px: 4.1 G multiply-adds forward (He et al., 2016), i.e. 8.2 GFLOP.
    assert 8.0e9 < flops < 8.4e9
    # torchvision's ResNet-50 without its classifier: 23,508,032 parameters; the head
    # (2 layers, as flags/imagenet_r50_pretrain.cfg) adds 2048x2048 + 2048x128 weights,
    # a BN scale and offset on the hidden layer, and on the output a BN scale only (the
    # reference head: no offset there).
    head = 2048 * 2048 + 2048 * 128 + 2 * 2048 + 128
    assert params == 23_508_032 + head
    table = scaling_model.rows(params, flops, 4096, [8, 32, 128], 128, [23.0], 125.0)
    assert [r["per_replica_batch"] for r in table] == [512, 128, 32]
    # Each replica holds its 2n rows of the 2N = 8192 columns (float32): 1024 x 8192 x 4
    # bytes = 32 MiB at 8 replicas, a quarter of that at 32.
    assert [r["logits_whole_mib"] for r in table] == [32.0, 8.0, 2.0]
    assert all(r["global_matrix_mib"] == 256.0 for r in table)
    shares = [r["comm_share@23GB/s"] for r in table]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] < 1


def test_accuracy_rows_are_the_mean_and_sample_sd_over_seeds():
    import statistics

    code = r"""
import json
from tools.benchmark import accuracy
runs = []
for impl, seed, knn, linear, seconds in [
    ("simclr_tf", 0, 0.40, 0.45, 100.0), ("simclr_tf", 1, 0.44, 0.47, 110.0),
    ("lightly", 0, 0.38, 0.43, 150.0), ("lightly", 1, 0.36, 0.42, 130.0),
]:
    scores = {"knn_acc": knn, "linear_acc": linear}
    runs.append({"impl": impl, "epochs": 1, "seed": seed, "precision": "bf16",
                 "train_seconds": seconds, "h": scores, "z": scores})
print(json.dumps(accuracy.summarize(runs)))
"""
    rows = {r["impl"]: r for r in json.loads(_in_a_process(code).splitlines()[-1])}
    assert list(rows) == ["simclr_tf", "lightly"]
    ours, peer = rows["simclr_tf"], rows["lightly"]
    assert ours["h_knn_acc"] == statistics.mean([0.40, 0.44])
    assert abs(ours["h_knn_acc_sd"] - statistics.stdev([0.40, 0.44])) < 1e-12
    assert abs(peer["z_linear_acc_sd"] - statistics.stdev([0.43, 0.42])) < 1e-12
    assert peer["train_seconds"] == 140.0 and ours["seeds"] == 2


def test_profile_sums_each_op_type_over_threads_and_steps():
    # A hand-built trace of 2 steps: two executor threads, op events named "name:type",
    # and the wrappers TensorFlow's traces hold around them, which must not count.
    out = _in_a_process(
        """
import json
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from tools.benchmark.profile import op_times

space = xplane_pb2.XSpace()
plane = space.planes.add(name="/host:CPU")
names = {
    1: "enc/conv/Conv2D:_MklNativeConv2D",
    2: "enc/bn:FusedBatchNormV3",
    3: "ExecutorState::Process",
    4: "EagerLocalExecute: __inference_one_step_on_data_8862",
    5: "KernelAndDeviceFunc::Run",
}
for key, name in names.items():
    plane.event_metadata[key].name = name
ms = 10**9  # picoseconds per millisecond
events = {
    "tf_Compute/1": [(1, 30), (2, 4), (3, 50), (1, 30)],
    "tf_Compute/2": [(1, 20), (2, 6), (3, 40)],
    "python": [(4, 90), (5, 90)],
}
for line_name, line_events in events.items():
    line = plane.lines.add(name=line_name)
    for key, duration in line_events:
        line.events.add(metadata_id=key, duration_ps=duration * ms)
space.planes.add(name="/device:CPU:0").lines.add().events.add(metadata_id=1, duration_ps=ms)
print(json.dumps(op_times(space, steps=2)))
"""
    )
    times = json.loads(out.splitlines()[-1])
    assert set(times) == {"_MklNativeConv2D", "FusedBatchNormV3"}
    assert times["_MklNativeConv2D"] == [40.0, 1.5]  # (30 + 30 + 20) / 2 ms, 3 ops / 2
    assert times["FusedBatchNormV3"] == [5.0, 1.0]


def test_matmul_rate_counts_two_flops_per_multiply_add():
    # A fake clock: every timed call takes 0.5 s, so 2 n^3 FLOPs give 4 n^3 / 1e9 GFLOP/s.
    out = _in_a_process(
        """
import time
from tools.benchmark import machine

ticks = iter(range(100))
time.perf_counter = lambda: 0.5 * next(ticks)
first = machine.matmul_gflops("float32", n=64, repeats=3)
print(first, machine.matmul_gflops("float32", n=64))
"""
    )
    first, again = (float(x) for x in out.split()[-2:])
    assert first == 4 * 64**3 / 1e9
    assert again == first  # measured once a process


def test_matmul_rate_is_none_where_bf16_cannot_run():
    out = _in_a_process(
        """
from simclr_tf import hardware
from tools.benchmark import machine

capped = hardware.Hardware(
    cpu_flags=frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), onednn_max_isa="AVX2"
)
assert capped.bf16_blocked
machine.this_hardware = lambda: capped
print(machine.matmul_gflops("mixed_bfloat16", n=64))
"""
    )
    assert out.split()[-1] == "None"


def test_a_step_rows_shares_are_its_flop_rate_over_each_peak():
    out = _in_a_process(
        """
import json
from tools.benchmark import step
from tools.benchmark.options import FLAGS

FLAGS(["test", "--batch=256"])
step.peak_gflops = lambda policy: 100.0
step.matmul_gflops = lambda policy: 125.0
print(json.dumps(step._row("simclr_tf", "float32", 0.5, flops=0.07e9)))
"""
    )
    row = json.loads(out.splitlines()[-1])
    # 0.07 GFLOP forward per view, 512 views, 3 x forward for a training step, in 0.5 s
    rate = 3 * 0.07 * 512 / 0.5
    assert abs(row["gflops_per_s"] - rate) < 1e-9
    assert abs(row["nominal_peak_share"] - rate / 100.0) < 1e-12
    assert abs(row["matmul_share"] - rate / 125.0) < 1e-12


def _write_checkpoint_state(run_dir, saved_at):
    """The `checkpoint` file tf.train.CheckpointManager keeps, naming one checkpoint."""
    (run_dir / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-390"\nall_model_checkpoint_paths: "ckpt-390"\n'
        f"all_model_checkpoint_timestamps: {saved_at!r}\n"
    )


def test_a_resumed_benchmark_cell_adds_up_the_time_of_its_processes(tmp_path):
    import time

    from tools.benchmark import resumed_time

    assert resumed_time.timed(str(tmp_path), lambda: 10.0) == (10.0, 1)
    # A second process starts, writes a checkpoint 40 s in and is killed: the clock
    # still holds its start. Its 40 s count; what it trained after that checkpoint is
    # trained again by the next process and counted there.
    clock_path = tmp_path / resumed_time.CLOCK_FILE
    clock = json.loads(clock_path.read_text())
    since = time.time() - 100.0
    clock["open_since"] = since
    clock_path.write_text(json.dumps(clock))
    _write_checkpoint_state(tmp_path, since + 40.0)
    total, processes = resumed_time.timed(str(tmp_path), lambda: 5.0)
    assert processes == 3 and abs(total - (10.0 + 40.0 + 5.0)) < 1e-3
    # Killed again before writing a checkpoint of its own: nothing of it counts.
    clock = json.loads(clock_path.read_text())
    clock["open_since"] = time.time() - 30.0
    clock_path.write_text(json.dumps(clock))
    total, processes = resumed_time.timed(str(tmp_path), lambda: 1.0)
    assert processes == 5 and abs(total - 56.0) < 1e-3


def test_a_cell_resumed_from_unrecorded_checkpoints_has_no_wall_time(tmp_path):
    from tools.benchmark import resumed_time

    _write_checkpoint_state(tmp_path, 1.0e9)
    assert resumed_time.timed(str(tmp_path), lambda: 5.0) == (None, 2)
    code = r"""
import json
from tools.benchmark import accuracy
scores = {"knn_acc": 0.4, "linear_acc": 0.45}
runs = [{"impl": "simclr_tf", "epochs": 1, "seed": s, "precision": "float32", "h": scores,
         "z": scores, "train_seconds": t, "train_processes": n}
        for s, t, n in [(0, 100.0, 1), (1, None, 2)]]
print(json.dumps(accuracy.summarize(runs)))
"""
    (row,) = json.loads(_in_a_process(code).splitlines()[-1])
    assert row["train_seconds"] is None and row["train_processes"] == 2
