"""`search`: exact nearest-neighbour and duplicate search over `tools/embed.py`'s
embeddings (`--embeddings_dir`), as `tools/similar.py` runs them."""

import time

import numpy as np
from absl import flags

from tools.benchmark.options import FLAGS

flags.DEFINE_string("embeddings_dir", None, "search: a directory tools/embed.py wrote.")
flags.DEFINE_integer("search_queries", 200, "search: queries timed (rows of the embeddings).")


def bench_search():
    from tools import similar

    if not FLAGS.embeddings_dir:
        raise ValueError("--embeddings_dir is required (run tools/embed.py first)")
    vectors, _, _, record = similar.load(FLAGS.embeddings_dir)
    rows = np.random.default_rng(FLAGS.seed).choice(len(vectors), FLAGS.search_queries)
    similar.nearest(vectors, vectors[rows[0]], 8, exclude=rows[0])  # warm caches
    times = []
    for row in rows:
        start = time.perf_counter()
        similar.nearest(vectors, vectors[row], 8, exclude=row)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    pairs = similar.duplicate_pairs(vectors, 0.95)
    scan_s = time.perf_counter() - start
    return [
        {
            "impl": "tools/similar.py, exact (numpy)",
            "images": len(vectors),
            "dim": int(vectors.shape[1]),
            "output": record.get("output"),
            "query_ms_median": 1e3 * float(np.median(times)),
            "query_ms_p90": 1e3 * float(np.percentile(times, 90)),
            "duplicate_scan_s": scan_s,
            "pairs_at_0.95": len(pairs),
        }
    ]
