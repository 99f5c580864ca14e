"""Device check of the cupy path (run where a GPU is lent; exits 0 with a 'skipped' line elsewhere).

    python bench/gpu_check.py [--rows 2000 10000 20000] [--permutations 200]

For each size, the MMD permutation test (`mlwork.multivariate.MMDDrift`) and the per-feature drift kernels
(`mlwork.drift.DriftDetector(backend=...)`) run with numpy and with cupy on the same data; the script checks that
both give the same statistic / p-values (to 1e-9 relative) and prints the speed-up. The pooled kernel matrix of
MMD is (2·rows)² floats, so rows are bounded by device memory (20 k rows per side: 12.8 GB in float64).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rows', type=int, nargs='+', default=[2_000, 10_000, 20_000])
    ap.add_argument('--permutations', type=int, default=200)
    a = ap.parse_args()
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no cupy, or no device
        print(f'skipped: no usable GPU for cupy ({type(e).__name__}: {e})')
        return 0
    import numpy as np
    from mlwork.drift import DriftDetector, drift_benchmark
    from mlwork.multivariate import MMDDrift
    out = []
    for n in a.rows:
        ref, cur, _ = drift_benchmark(n, seed=0)
        num = [c for c in ref.columns if c.startswith('num_')][:10]
        row = {'rows': n}
        for backend in ('numpy', 'cupy'):
            det = MMDDrift(max_rows=n, n_permutations=a.permutations, backend=backend).fit(ref.select(num))
            det.score(cur.select(num).head(min(n, 200)))  # warm-up (kernels compiled, memory pool)
            t = time.perf_counter(); res = det.score(cur.select(num)); row[f'mmd_{backend}_s'] = time.perf_counter() - t
            row[f'mmd_{backend}'] = res.to_dict()
        row['mmd_speedup'] = row['mmd_numpy_s'] / row['mmd_cupy_s']
        for backend in ('numpy', 'cupy'):
            t = time.perf_counter(); r = DriftDetector(backend=backend).fit(ref).score(cur); row[f'drift_{backend}_s'] = time.perf_counter() - t
            row[f'drift_{backend}_p'] = r.columns['p_value'].to_list()
        pn, pc = np.array(row['drift_numpy_p'], float), np.array(row['drift_cupy_p'], float)
        row['drift_p_equal'] = bool(np.allclose(pn, pc, rtol=1e-9, atol=0, equal_nan=True))
        print(f"{n:,} rows: MMD numpy {row['mmd_numpy_s']:.2f} s, cupy {row['mmd_cupy_s']:.2f} s ({row['mmd_speedup']:.1f}×); "
              f"per-feature drift numpy {row['drift_numpy_s']:.2f} s, cupy {row['drift_cupy_s']:.2f} s; p-values equal: {row['drift_p_equal']}",
              flush=True)
        out.append(row)
    with open('gpu_check.json', 'w') as f:
        json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())
