"""`peak`: what this machine's cores reach in a large matmul, against the nominal peak.

The nominal peak assumes the clock /proc/cpuinfo reports; a VM's cores can run above it,
and then a step's share of the nominal peak exceeds what the hardware allows. The
matmul's rate is the yardstick `step` divides by instead.
"""

from tools.benchmark.machine import matmul_gflops, peak_gflops, precisions


def bench_peak():
    rows = []
    for label, policy in precisions():
        rate = matmul_gflops(policy)
        if rate is None:
            continue
        row = {"impl": "matmul 4096^3", "precision": label, "matmul_gflops": rate}
        nominal = peak_gflops(policy)
        if nominal:
            row["nominal_peak_gflops"] = nominal
            row["matmul_vs_nominal"] = rate / nominal
        rows.append(row)
    return rows
