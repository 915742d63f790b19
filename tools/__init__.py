"""Scripts users run beside training (benchmarks, baselines, data preparation)."""
