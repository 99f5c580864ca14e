"""Device check of the cupy path (run where a GPU is lent; exits 0 with a 'skipped' line elsewhere).

    python bench/gpu_check.py [--mmd-rows 10000 100000] [--drift-rows 1000000] [--permutations 200] [--json FILE]

MMD: the permutation test of `mlwork.drift.multivariate.MMDDrift` (10 numeric columns of `drift_benchmark`, the
given rows on *each* side, blocked kernel) runs with numpy (a thread per core) and with cupy on the same
rows and the same permutations; the script checks that both give the same statistic (1e-9 relative, or 1e-12
absolute near zero) and the same p-value, on the drifted pair and on a pair without drift, and prints the speed-up. Per-feature drift: `mlwork.drift.univariate.DriftDetector(backend=...)` fits the
25-column benchmark reference and scores the current frame with each backend; the p-values must agree
(1e-9 relative). Timings are the median of `--repeat` runs after one warm-up (kernels compiled, memory pool).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback


def _timed(fn, repeat: int, warm: bool = True):
    if warm:
        fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _close(a: float, b: float) -> bool:
    "Same MMD² up to summation order: 1e-9 relative, or 1e-12 absolute (the kernel is at most 1; near zero the three\n    sums cancel, and cuBLAS and OpenBLAS add in different orders: 8.9e-15 apart measured at 2 × 10,000 rows)."
    return abs(a - b) <= max(1e-9 * abs(a), 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--mmd-rows', type=int, nargs='+', default=[10_000, 100_000])
    ap.add_argument('--drift-rows', type=int, nargs='+', default=[1_000_000])
    ap.add_argument('--permutations', type=int, default=200)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--numpy-repeat', type=int, default=1, help='timed numpy MMD runs at the largest size (slow)')
    ap.add_argument('--json', default='gpu_check.json')
    a = ap.parse_args()
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        dev = cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()
    except Exception as e:  # no cupy, or no device
        print(f'skipped: no usable GPU for cupy ({type(e).__name__}: {e})')
        return 0
    import numpy as np
    from mlwork.drift.power import drift_benchmark
    from mlwork.drift.univariate import DriftDetector
    from mlwork.drift.multivariate import MMDDrift, _cores
    env = {'gpu': dev, 'cupy': cupy.__version__, 'numpy': np.__version__, 'cpu_cores': _cores(),
           'python': platform.python_version()}
    print(json.dumps(env), flush=True)
    out = {'env': env, 'mmd': [], 'drift': []}
    ok = True
    for n in a.mmd_rows:
      try:
        ref, cur, _ = drift_benchmark(n, seed=0)
        num = [c for c in ref.columns if c.startswith('num_')][:10]
        row = {'rows_per_side': n, 'permutations': a.permutations}
        for backend in ('cupy', 'numpy'):
            det = MMDDrift(max_rows=n, n_permutations=a.permutations, backend=backend).fit(ref.select(num))
            sync = (lambda: cupy.cuda.Device().synchronize()) if backend == 'cupy' else (lambda: None)
            def run():
                r = det.score(cur.select(num)); sync(); return r
            slow = backend == 'numpy' and n == max(a.mmd_rows)  # the slow side at the largest size: no warm-up
            row[f'{backend}_s'], res = _timed(run, a.numpy_repeat if slow else a.repeat, warm=not slow)
            row[f'{backend}_statistic'], row[f'{backend}_p'] = res.statistic, res.p_value
            print(f"  MMD {n:,} rows/side {backend}: {row[f'{backend}_s']:.3f} s, MMD² {res.statistic:.6g}, p {res.p_value:.4g}",
                  flush=True)
        if n == min(a.mmd_rows):  # a pair without drift too, so the p-values compared are not both the smallest possible
            quiet = drift_benchmark(n, seed=1)[0].select(num)  # numeric columns do not depend on the seed's category mix
            ps = [MMDDrift(max_rows=n, n_permutations=a.permutations, backend=b).fit(ref.select(num)).score(quiet)
                  for b in ('numpy', 'cupy')]
            row['no_drift_p'] = [r.p_value for r in ps]
            row['no_drift_statistic'] = [r.statistic for r in ps]
            same = ps[0].p_value == ps[1].p_value and _close(ps[0].statistic, ps[1].statistic)
            ok &= same
            print(f"  MMD {n:,} rows/side without drift: p numpy {ps[0].p_value:.4g}, cupy {ps[1].p_value:.4g}; equal: {same}", flush=True)
        row['speedup'] = row['numpy_s'] / row['cupy_s']
        row['equal'] = bool(_close(row['numpy_statistic'], row['cupy_statistic']) and row['numpy_p'] == row['cupy_p'])
        ok &= row['equal']
        print(f"MMD {n:,} rows per side, {a.permutations} permutations: numpy {row['numpy_s']:.2f} s, cupy {row['cupy_s']:.3f} s "
              f"({row['speedup']:.1f}x); same statistic and p-value: {row['equal']}", flush=True)
        out['mmd'].append(row)
      except Exception:  # report and go on: one device run should say as much as it can
        traceback.print_exc(); ok = False
    for n in a.drift_rows:
      try:
        ref, cur, _ = drift_benchmark(n, seed=0)
        row = {'rows': n}
        for backend in ('numpy', 'cupy'):
            det = DriftDetector(backend=backend).fit(ref)
            row[f'{backend}_s'], r = _timed(lambda: det.score(cur), a.repeat)
            row[f'{backend}_p'] = r.columns['p_value'].to_list()
        pn, pc = np.array(row['numpy_p'], float), np.array(row['cupy_p'], float)
        row['p_equal'] = bool(np.allclose(pn, pc, rtol=1e-9, atol=0, equal_nan=True))
        ok &= row['p_equal']
        print(f"per-feature drift, {n:,} rows x 25 columns, fitted reference: numpy {row['numpy_s']:.3f} s, "
              f"cupy {row['cupy_s']:.3f} s; p-values equal: {row['p_equal']}", flush=True)
        out['drift'].append(row)
      except Exception:
        traceback.print_exc(); ok = False
    with open(a.json, 'w') as f:
        json.dump(out, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
