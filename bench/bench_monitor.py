"""A monitoring run over a week of logged predictions, against the same computation written by hand in pandas.

    python bench/bench_monitor.py [--rows 10000000] [--label-share 0.3] [--repeat 1] [--out DIR]

Set-up (not timed): a workspace whose prediction log (`<ws>/serve/bench/predictions`, the log's Delta schema: request
id, time, model, version, arm, entity key, prediction, latency, a `features` struct of 6 numeric and 2 categorical
features) holds `--rows` predictions spread over 7 days (10 M ≈ 17 requests/s) from two versions (champion 90 %,
challenger 10 %), written directly with deltalake in 1 M-row commits; the feedback table holds labels for
`--label-share` of them (plus 1 % duplicated); the reference is 100,000 rows of the training distribution. Day 5 on
drifts `f0` and the scores.

Timed, alternately in this process (mlwork first):

- **mlwork**: `monitor_run(ws, 'bench', window='1d', reference=ref, n_boot=200)`: operational (requests, rows/s,
  latency p50/p95/p99), realised performance (ROC AUC, accuracy, log loss, Brier, label rate, each with a bootstrap
  interval), label coverage, CBPE estimates for the unlabelled rows, drift of the 8 features and of the predictions
  (KS / chi-squared, effect with interval, PSI), per day and (version, arm); lazy scans, 50,000-row samples per
  window for drift and estimation.
- **pandas**: the same by hand: read the log (`pyarrow, the needed columns, the features struct flattened) and the
  feedback, keep the latest label per request, merge, group by day, version and arm: counts, distinct requests,
  latency quantiles, sklearn `roc_auc_score` / `accuracy_score` / `log_loss` / `brier_score_loss`, a 200-draw bootstrap
  of each on 20,000 labelled rows (the same m-out-of-n resampling), and `ks_2samp` / `chi2_contingency` of each feature
  and of the predictions against the reference on the whole window. No estimation (CBPE) on this side.

Reported: seconds, the peak RSS during each side (a thread samples RSS every 10 ms) above the RSS before it, and the
ratio pandas seconds ÷ mlwork seconds (above 1: mlwork is faster). JSON to `bench/results/monitor-<UTC time>.json`.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import psutil

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
NUMERIC = [f'f{i}' for i in range(6)]
CATEGORICAL = ['channel', 'region']
CHUNK = 1_000_000


def _chunk(start: int, n: int, total: int, rng: np.random.Generator) -> pl.DataFrame:
    """Rows start..start+n of the log: a week, two versions, drift from day 5 on."""
    i = np.arange(start, start + n)
    secs = i * (7 * 86400 / total)
    late = secs >= 4 * 86400
    x = rng.normal(size=(n, 6))
    x[:, 0] += late * 0.3
    score = 1 / (1 + np.exp(-(x[:, 0] + 0.5 * x[:, 1] - 0.2)))
    version = np.where(rng.random(n) < 0.9, 1, 2)
    feats = pl.DataFrame({**{f: x[:, k] for k, f in enumerate(NUMERIC)},
                          'channel': rng.choice(['web', 'app', 'branch'], n, p=[0.5, 0.4, 0.1]),
                          'region': rng.choice(['n', 's', 'e', 'w'], n)})
    frame = pl.DataFrame({
        'ts': (pl.Series(secs * 1e6).cast(pl.Int64) + int(T0.timestamp() * 1e6)).cast(pl.Datetime('us', 'UTC')),
        'version': version, 'prediction': score, 'latency_ms': rng.gamma(2.0, 6.0, n),
        'probabilities': None, 'label': None, 'reasons': None}).with_columns(
        request_id=pl.format('req-{}', pl.int_range(start, start + n)), model=pl.lit('bench'),
        arm=pl.when(pl.col('version') == 1).then(pl.lit('champion')).otherwise(pl.lit('challenger')),
        entity_key=pl.format('cust-{}', pl.int_range(start, start + n) % 1_000_000),
        probabilities=pl.lit(None, pl.List(pl.Float64)), label=pl.lit(None, pl.String), reasons=pl.lit(None, pl.String),
        features=feats.to_struct())
    truth = (rng.random(n) < score).astype(int)
    return frame.select('request_id', 'ts', 'model', 'version', 'arm', 'entity_key', 'prediction', 'probabilities',
                        'label', 'latency_ms', 'reasons', 'features'), truth


def build(root: Path, rows: int, label_share: float, seed: int) -> tuple:
    from deltalake import write_deltalake
    from mlwork.core import init_workspace, open_workspace
    from mlwork.serve.predlog import serve_dir
    ws = open_workspace(init_workspace(root / 'ws').workspace.root)
    folder = serve_dir(ws, 'bench')
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        frame, truth = _chunk(start, n, rows, rng)
        write_deltalake(str(folder / 'predictions'), frame.to_arrow(), mode='append')
        keep = rng.random(n) < label_share
        fb = frame.filter(pl.Series(keep)).select('request_id', label=pl.Series(truth[keep]).cast(pl.String),
                                                  ts=pl.col('ts') + pl.duration(hours=6))
        dup = fb.head(max(1, fb.height // 100)).with_columns(ts=pl.col('ts') + pl.duration(hours=1))
        write_deltalake(str(folder / 'feedback'), pl.concat([fb, dup]).to_arrow(), mode='append')
        print(f'  wrote {start + n:,} rows', file=sys.stderr)
    x = rng.normal(size=(100_000, 6))
    ref = pl.DataFrame({**{f: x[:, k] for k, f in enumerate(NUMERIC)},
                        'channel': rng.choice(['web', 'app', 'branch'], 100_000, p=[0.5, 0.4, 0.1]),
                        'region': rng.choice(['n', 's', 'e', 'w'], 100_000)}).with_columns(
        prediction=1 / (1 + (-(pl.col('f0') + 0.5 * pl.col('f1') - 0.2)).exp()))
    return ws, folder, ref


def mlwork_side(ws, ref: pl.DataFrame) -> dict:
    from mlwork.monitor.metrics import monitor_run
    run = monitor_run(ws, 'bench', window='1d', reference=ref, n_boot=200, explain_rows=0, run_id='bench')
    m = run.metrics
    return {'metric_rows': m.height, 'windows': run.windows,
            'roc_auc_v1_day0': m.filter((pl.col('metric') == 'roc_auc') & (pl.col('kind') == 'performance')
                                        & (pl.col('version') == 1)).sort('window_start')['value'][0],
            'kinds': sorted(set(m['kind']))}


def pandas_side(folder: Path, ref: pl.DataFrame, n_boot: int = 200, boot_rows: int = 20_000) -> dict:
    import pandas as pd
    from deltalake import DeltaTable
    from scipy.stats import chi2_contingency, ks_2samp
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
    table = DeltaTable(str(folder / 'predictions')).to_pyarrow_table(
        columns=['request_id', 'ts', 'version', 'arm', 'prediction', 'latency_ms', 'features'])
    log = table.flatten().to_pandas()  # the struct's fields as columns `features.f0`, ...
    log.columns = [c.removeprefix('features.') for c in log.columns]
    del table
    fb = DeltaTable(str(folder / 'feedback')).to_pandas()
    fb = fb.sort_values('ts').drop_duplicates('request_id', keep='last')
    fb['y'] = fb['label'].astype(int)
    log['day'] = log['ts'].dt.floor('D')
    joined = log.merge(fb[['request_id', 'y']], on='request_id', how='inner')
    refp = ref.to_pandas()
    rng = np.random.default_rng(0)
    out = []
    for key, g in log.groupby(['day', 'version', 'arm']):
        row = {'key': key, 'rows': len(g), 'requests': g['request_id'].nunique(),
               **{f'p{q}': np.percentile(g['latency_ms'], q) for q in (50, 95, 99)}}
        for f in NUMERIC + ['prediction']:
            row[f'ks_{f}'] = ks_2samp(refp[f], g[f]).pvalue
        for f in CATEGORICAL:
            table = pd.concat([refp[f].value_counts(), g[f].value_counts()], axis=1).fillna(0).to_numpy()
            row[f'chi2_{f}'] = chi2_contingency(table.T).pvalue
        out.append(row)
    perf = []
    for key, g in joined.groupby(['day', 'version', 'arm']):
        y, p = g['y'].to_numpy(), g['prediction'].to_numpy()
        row = {'key': key, 'roc_auc': roc_auc_score(y, p), 'accuracy': accuracy_score(y, p >= 0.5),
               'log_loss': log_loss(y, p), 'brier': brier_score_loss(y, p)}
        idx = rng.choice(len(y), min(boot_rows, len(y)), replace=False)
        boots = []
        for _ in range(n_boot):
            j = rng.choice(idx, len(idx))
            boots.append((roc_auc_score(y[j], p[j]), accuracy_score(y[j], p[j] >= 0.5), log_loss(y[j], p[j], labels=[0, 1]),
                          brier_score_loss(y[j], p[j])))
        row['roc_auc_interval'] = np.quantile(np.array(boots)[:, 0], [0.025, 0.975]).tolist()
        perf.append(row)
    first = min((r for r in perf if r['key'][1] == 1), key=lambda r: r['key'][0])
    return {'groups': len(out), 'roc_auc_v1_day0': first['roc_auc']}


class Peak:
    """Peak RSS while the block runs (a thread samples every 10 ms)."""
    def __enter__(self):
        gc.collect()
        self.proc = psutil.Process()
        self.before = self.peak = self.proc.memory_info().rss
        self.stop = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=10_000_000)
    ap.add_argument('--label-share', type=float, default=0.3)
    ap.add_argument('--repeat', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', type=Path, default=HERE / 'results')
    ap.add_argument('--only', choices=['mlwork', 'pandas', 'both'], default='both')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-monitor-') as tmp:
        t = time.perf_counter()
        ws, folder, ref = build(Path(tmp), args.rows, args.label_share, args.seed)
        print(f'set-up: {time.perf_counter() - t:.1f} s', file=sys.stderr)
        samples: dict[str, list[dict]] = {'mlwork': [], 'pandas': []}
        sides = {'mlwork': lambda: mlwork_side(ws, ref), 'pandas': lambda: pandas_side(folder, ref)}
        for _ in range(args.repeat):
            for name, fn in sides.items():
                if args.only not in ('both', name):
                    continue
                with Peak() as pk:
                    info = fn()
                samples[name].append({'seconds': pk.seconds, 'peak_rss_mb': pk.peak / 2**20,
                                      'peak_above_start_mb': (pk.peak - pk.before) / 2**20, **info})
                print(f'  {name}: {pk.seconds:.1f} s, peak RSS {pk.peak / 2**20:.0f} MB '
                      f'(+{(pk.peak - pk.before) / 2**20:.0f} MB)', file=sys.stderr)
                gc.collect()
    med = {k: float(np.median([s['seconds'] for s in v])) for k, v in samples.items() if v}
    print(f"\n| rows | labels | side | seconds (median of {args.repeat}) | peak RSS MB | above start MB |")
    print('|---:|---:|---|---:|---:|---:|')
    for k, v in samples.items():
        if v:
            print(f"| {args.rows:,} | {args.label_share:.0%} | {k} | {med[k]:.1f} | {max(s['peak_rss_mb'] for s in v):.0f} "
                  f"| {max(s['peak_above_start_mb'] for s in v):.0f} |")
    if len(med) == 2:
        print(f"\nratio (pandas s ÷ mlwork s): {med['pandas'] / med['mlwork']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"monitor-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({'args': {k: str(v) for k, v in vars(args).items()}, 'samples': samples,
                                'median_s': med, 'cpu_count': os.cpu_count(),
                                'load_avg': os.getloadavg()}, indent=1, default=str))
    print(f'JSON: {path}', file=sys.stderr)


if __name__ == '__main__':
    main()
