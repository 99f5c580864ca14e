"""Fairness audit with 1,000-resample intervals vs fairlearn 0.15 MetricFrame, on the issue's case.

    python bench/bench_fairness.py [--rows 1000000] [--n-boot 1000] [--fairlearn-boot 5] [--repeat 3]

Data: synthetic with the ACS group structure — SEX (2 levels) × RAC1P (9 levels, ACS proportions with a
floor of 0.3 % so all 18 intersections are observed), a 0/1 label with group-dependent base rates, 0/1
decisions with group-dependent TPR/FPR, and a score for the calibration case. Four metrics as in the issue
(selection rate, TPR, FPR, accuracy). fairlearn runs once without intervals and once with
`n_boot=--fairlearn-boot` (its own bootstrap: it resamples rows and recomputes the MetricFrame); the
per-resample cost is (with − without) / n_boot. mlwork runs `fairness_audit` (every metric: six count
metrics per group and per intersection, every disparity, intervals on all) with `--n-boot` resamples,
`--repeat` times (median). Same process, same data. Writes bench/results/fairness-<time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / 'results'
RACE_P = np.array([0.73, 0.12, 0.005, 0.003, 0.003, 0.06, 0.003, 0.04, 0.036])


def make_frame(rows: int, seed: int):
    import polars as pl
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(['1', '2']), size=rows)
    race = rng.choice(np.array([str(i) for i in range(1, 10)]), size=rows, p=RACE_P / RACE_P.sum())
    r = race.astype(np.int64)
    base = 0.35 + 0.02 * r + np.where(sex == '1', 0.05, 0.0)
    y = (rng.random(rows) < base).astype(np.int64)
    score = np.clip(0.5 * y + 0.25 + rng.normal(0, 0.2, rows) - 0.01 * r, 0, 1)
    pred = (score >= 0.5).astype(np.int64)
    return pl.DataFrame({'SEX': sex, 'RAC1P': race, 'y': y, 'pred': pred, 'score': score})


def time_it(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--n-boot', type=int, default=1000)
    ap.add_argument('--fairlearn-boot', type=int, default=5, help='fairlearn resamples (0: skip fairlearn bootstrap)')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    from mlwork.fairness.metrics import fairness_audit
    frame = make_frame(a.rows, a.seed)
    groups = frame.select('SEX', 'RAC1P').n_unique()
    print(f'{a.rows:,} rows, SEX × RAC1P = {groups} groups; mlwork n_boot={a.n_boot}, fairlearn n_boot={a.fairlearn_boot}')
    res: dict = {'rows': a.rows, 'groups': groups, 'n_boot': a.n_boot, 'fairlearn_boot': a.fairlearn_boot}
    fairness_audit(frame.head(10_000), y_true='y', y_pred='pred', sensitive=['SEX', 'RAC1P'], n_boot=10)  # imports, warm-up
    ours = time_it(lambda: fairness_audit(frame, y_true='y', y_pred='pred', sensitive=['SEX', 'RAC1P'], n_boot=a.n_boot), a.repeat)
    point = time_it(lambda: fairness_audit(frame, y_true='y', y_pred='pred', sensitive=['SEX', 'RAC1P'], n_boot=0), a.repeat)
    calib = time_it(lambda: fairness_audit(frame, y_true='y', score='score', sensitive=['SEX', 'RAC1P'], n_boot=a.n_boot), a.repeat)
    med = statistics.median
    res['mlwork'] = {'audit_s': ours, 'audit_median_s': med(ours), 'point_only_median_s': med(point),
                     'audit_with_calibration_median_s': med(calib),
                     'per_resample_s': (med(ours) - med(point)) / max(a.n_boot, 1)}
    from fairlearn.metrics import (MetricFrame, false_positive_rate, selection_rate, true_positive_rate)
    from sklearn.metrics import accuracy_score
    metrics = {'selection_rate': selection_rate, 'tpr': true_positive_rate, 'fpr': false_positive_rate,
               'accuracy': accuracy_score}
    yt, yp = frame['y'].to_numpy(), frame['pred'].to_numpy()
    sf = {'SEX': frame['SEX'].to_numpy(), 'RAC1P': frame['RAC1P'].to_numpy()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fl_plain = time_it(lambda: MetricFrame(metrics=metrics, y_true=yt, y_pred=yp, sensitive_features=sf), 1)[0]
        fl_boot = None
        if a.fairlearn_boot:
            fl_boot = time_it(lambda: MetricFrame(metrics=metrics, y_true=yt, y_pred=yp, sensitive_features=sf,
                                                  n_boot=a.fairlearn_boot, ci_quantiles=[0.025, 0.975], random_state=0), 1)[0]
    fl_per = (fl_boot - fl_plain) / a.fairlearn_boot if fl_boot is not None else None
    res['fairlearn'] = {'plain_s': fl_plain, 'boot_s': fl_boot, 'per_resample_s': fl_per,
                        'extrapolated_1000_s': fl_plain + 1000 * fl_per if fl_per is not None else None}
    ratio = fl_per / res['mlwork']['per_resample_s'] if fl_per and res['mlwork']['per_resample_s'] > 0 else None
    res['per_resample_ratio'] = ratio
    rows = [('mlwork fairness_audit, no intervals', med(point)),
            (f'mlwork fairness_audit, {a.n_boot} resamples (every metric)', med(ours)),
            (f'mlwork fairness_audit + calibration, {a.n_boot} resamples', med(calib)),
            ('fairlearn MetricFrame, 4 metrics, no intervals', fl_plain)]
    if fl_boot is not None:
        rows += [(f'fairlearn MetricFrame, 4 metrics, n_boot={a.fairlearn_boot}', fl_boot),
                 ('fairlearn, 1000 resamples (extrapolated)', res['fairlearn']['extrapolated_1000_s'])]
    print('\n| case | seconds |\n|---|---:|')
    for name, s in rows:
        print(f'| {name} | {s:,.2f} |')
    print(f"\nper resample: mlwork {res['mlwork']['per_resample_s'] * 1e3:.3f} ms, "
          + (f"fairlearn {fl_per:.2f} s — ratio {ratio:,.0f}×" if ratio else 'fairlearn not bootstrapped'))
    res['environment'] = {'python': platform.python_version(), 'cpu_count': os.cpu_count(), 'platform': platform.platform()}
    res['started'] = dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"fairness-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(res, indent=1) + '\n')
    print(f'results: {path}')


if __name__ == '__main__':
    main()
