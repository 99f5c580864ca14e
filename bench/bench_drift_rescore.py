"""Scoring a new batch against a fitted reference (the issue's target: under a second at 1 M rows × 25 columns).

    python bench/bench_drift_rescore.py [--rows 1000000] [--repeat 7]

`mlwork.drift.power.drift_benchmark` frames (20 numeric + 5 categorical columns); the reference is fitted once, then
`DriftDetector.score` is timed on new batches (the current frame reshuffled before each timing, so nothing is
cached from the previous call but the calibration of that sample size, as in production). Three batches:

- **benchmark drift**: the issue's benchmark (4 numeric columns moved by 0.2 sd, one categorical by 10 %);
- **mild drift**: the same columns moved by 0.02 sd (KS p-values between 0.02 and 1e-160, where scipy's
  `kstwo.sf` sums Smirnov's series term by term: 0.6 s per column at 1 M rows per side);
- **benchmark drift, 90 % of the rows**: sizes differ, so Wasserstein needs the quantile grid of (n, m);
  it is dropped before each timing, so every timing pays for building it.

Two sides score each batch with the same fitted reference, in the same run: mlwork as it is (KS from the
reference index, Wasserstein from quantile functions, the fast KS p-value), and the engine before those changes
(the full merge of both sorted samples per column, the p-value from `scipy.stats.kstwo.sf`). Prints median
(min–max) and writes `bench/results/drift-rescore-<rows>.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import stats

import mlwork.drift.univariate as drift
from mlwork.drift.kernels import ks_wasserstein
from mlwork.drift.power import drift_benchmark
from mlwork.drift.univariate import DriftDetector

HERE = Path(__file__).resolve().parent


def _scipy_pvalue(d: float, en: float) -> float:
    return float(np.clip(stats.kstwo.sf(d, en), 0, 1))


def timed(det: DriftDetector, cur, repeat: int, drop_grids: bool = False) -> tuple[list[float], list[str]]:
    times, res = [], None
    for i in range(repeat):
        batch = cur.sample(fraction=1.0, shuffle=True, seed=i).rechunk()
        if drop_grids:
            det._grids.clear()
        t = time.perf_counter(); res = det.score(batch); times.append(time.perf_counter() - t)
    return times, res.drifted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--repeat', type=int, default=7)
    a = ap.parse_args()
    out = {'rows': a.rows, 'repeat': a.repeat, 'cores': len(os.sched_getaffinity(0)), 'python': platform.python_version(),
           'numpy': np.__version__, 'date': time.strftime('%Y-%m-%d'), 'cases': []}
    fast_p, fitted = drift.ks_pvalue, drift._ks_wasserstein_fitted
    merge = lambda self, st, y: ks_wasserstein(st['values'], y, method=self.ks_method)
    sides = (('mlwork', fast_p, fitted), ('merge + scipy kstwo.sf (before)', _scipy_pvalue, merge))
    for label, shift, moved, share in (('benchmark drift', 0.2, 0.1, 1.0), ('mild drift', 0.02, 0.02, 1.0),
                                       ('benchmark drift, 90 % of the rows', 0.2, 0.1, 0.9)):
        ref, cur, truth = drift_benchmark(a.rows, shift=shift, moved=moved, seed=0)
        cur = cur.head(int(a.rows * share))
        det = DriftDetector().fit(ref)
        det.score(cur)  # warm-up: calibration of this sample size is computed once and cached
        for side, p_fn, ks_fn in sides:
            drift.ks_pvalue, drift._ks_wasserstein_fitted = p_fn, ks_fn
            try:
                times, found = timed(det, cur, a.repeat, drop_grids=share < 1)
            finally:
                drift.ks_pvalue, drift._ks_wasserstein_fitted = fast_p, fitted
            row = {'batch': label, 'side': side, 'rows_current': cur.height, 'median_s': statistics.median(times),
                   'min_s': min(times), 'max_s': max(times), 'drifted': found, 'injected': truth}
            out['cases'].append(row)
            print(f"{a.rows:,} rows, {label}, {side}: median {row['median_s']:.3f} s ({row['min_s']:.3f}–{row['max_s']:.3f}); "
                  f"flagged {len(found)} ({len(set(found) & set(truth))} of {len(truth)} injected)", flush=True)
    path = HERE / 'results' / f'drift-rescore-{a.rows}.json'
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
