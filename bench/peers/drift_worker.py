"""One side of bench/bench_drift.py, run as its own process so that its peak memory is its own.

    python drift_worker.py SIDE REFERENCE.parquet CURRENT.parquet [--html DIR]

SIDE is one of: mlwork, scipy (run by mlwork's venv), evidently, evidently-chi2, nannyml, alibi (run by
the peers' venv, see requirements.txt). Reading the Parquet files is not timed; everything after is.
Prints one JSON object on the last line of stdout: seconds, rss after loading, peak rss (ru_maxrss),
the columns each side flagged and side-specific details.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

CATEGORICAL_PREFIX = 'cat_'  # drift_benchmark's categorical columns: cat_0 … cat_4
ALPHA = 0.05


def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _read_polars(ref: str, cur: str):
    import polars as pl
    return pl.read_parquet(ref), pl.read_parquet(cur)


def _read_pandas(ref: str, cur: str):
    import pandas as pd
    return pd.read_parquet(ref), pd.read_parquet(cur)


def _reuse_sorted(c) -> bool:
    try:
        from mlwork.drift.report import reuse_sorted
    except ImportError:
        return False
    return reuse_sorted(c)


def side_mlwork(ref: str, cur: str, html: str | None) -> dict:
    from mlwork.drift.univariate import DriftDetector
    r, c = _read_polars(ref, cur)
    out = {'rss_loaded': _rss()}
    t0 = time.perf_counter()
    det = DriftDetector().fit(r)
    t1 = time.perf_counter()
    result = det.score(c, keep_sorted=bool(html) and _reuse_sorted(c))  # the report reuses the sorted values (as `mlwork drift --report`)
    out['seconds'] = time.perf_counter() - t0
    out['fit_seconds'], out['score_seconds'] = t1 - t0, out['seconds'] - (t1 - t0)
    out['flagged'] = result.drifted  # changed columns: the corrected test rejects
    out['material'] = result.material
    out['alarm'] = result.alarm
    out['method'] = 'DriftDetector() defaults: KS / chi2, BH; changed = corrected test rejects (material: effect interval above the bar)'
    out['p_value'] = dict(zip(result.columns['column'], result.columns['p_value']))
    if html:
        try:
            from mlwork.drift.report import drift_report
        except ImportError:
            out['html_seconds'] = None
        else:
            t0 = time.perf_counter()
            drift_report(result, Path(html) / 'mlwork-drift.html', reference=r, current=c, detector=det)
            out['html_seconds'] = time.perf_counter() - t0
    batch = c.sample(fraction=1.0, shuffle=True, seed=1).rechunk()  # a new batch (same rows, new order), made before timing
    t2 = time.perf_counter()
    det.score(batch)  # against the fitted reference
    out['rescore_seconds'] = time.perf_counter() - t2
    return out


def side_scipy(ref: str, cur: str, html: str | None) -> dict:
    import numpy as np
    from scipy import stats
    r, c = _read_polars(ref, cur)
    out = {'rss_loaded': _rss()}
    t0 = time.perf_counter()
    pvals = {}
    for name in r.columns:
        if name.startswith(CATEGORICAL_PREFIX):
            a, b = r[name].value_counts(), c[name].value_counts()
            cats = sorted(set(a[name].to_list()) | set(b[name].to_list()))
            ra = dict(zip(a[name].to_list(), a['count'].to_list()))
            cb = dict(zip(b[name].to_list(), b['count'].to_list()))
            table = np.array([[ra.get(k, 0) for k in cats], [cb.get(k, 0) for k in cats]])
            pvals[name] = float(stats.chi2_contingency(table, correction=False).pvalue)
        else:
            pvals[name] = float(stats.ks_2samp(r[name].to_numpy(), c[name].to_numpy()).pvalue)
    out['seconds'] = time.perf_counter() - t0
    k = len(pvals)
    out['flagged'] = [n for n, p in pvals.items() if p < ALPHA / k]
    out['method'] = 'scipy ks_2samp / chi2_contingency per column, Bonferroni'
    out['p_value'] = pvals
    return out


_DISTANCE_WORDS = ('distance', 'divergence', 'psi', 'wasserstein', 'jensen', 'hellinger', 'tvd', 'energy', 'kl_div')


def _evidently_flags(snapshot) -> tuple[list[str], dict]:
    "Columns Evidently flagged, from each ValueDrift metric's value, method and threshold."
    flagged, detail = [], {}
    for m in snapshot.dict()['metrics']:
        cfg = m['config']
        if not cfg['type'].endswith('ValueDrift'):
            continue
        name, value, thr = cfg['column'], float(m['value']), float(cfg['threshold'])
        method = m['metric_name'].split('method=')[1].split(',threshold')[0]
        is_p = not any(w in method.lower() for w in _DISTANCE_WORDS)
        drift = value < thr if is_p else value >= thr
        detail[name] = {'method': method, 'value': value, 'threshold': thr, 'drift': drift}
        if drift:
            flagged.append(name)
    return flagged, detail


def side_evidently(ref: str, cur: str, html: str | None, chi2: bool = False) -> dict:
    from evidently import Report
    from evidently.presets import DataDriftPreset
    r, c = _read_pandas(ref, cur)
    out = {'rss_loaded': _rss()}
    t0 = time.perf_counter()
    preset = DataDriftPreset(cat_method='chisquare') if chi2 else DataDriftPreset()
    snapshot = Report([preset]).run(current_data=c, reference_data=r)
    flagged, detail = _evidently_flags(snapshot)
    out['seconds'] = time.perf_counter() - t0
    out['flagged'] = flagged
    out['detail'] = detail
    out['method'] = 'DataDriftPreset(cat_method="chisquare")' if chi2 else 'DataDriftPreset() defaults'
    if chi2:  # the same column's p-value from scipy's test of homogeneity (2xk contingency table)
        import numpy as np
        from scipy import stats
        cmp = {}
        for name in [n for n in r.columns if n.startswith(CATEGORICAL_PREFIX)]:
            cats = sorted(set(r[name]) | set(c[name]))
            ra, cb = r[name].value_counts(), c[name].value_counts()
            table = np.array([[ra.get(k, 0) for k in cats], [cb.get(k, 0) for k in cats]])
            cmp[name] = {'evidently_chisquare': detail[name]['value'],
                         'scipy_chi2_contingency': float(stats.chi2_contingency(table, correction=False).pvalue)}
        out['chi2_vs_scipy'] = cmp
    if html and not chi2:
        t0 = time.perf_counter()
        snapshot.save_html(str(Path(html) / 'evidently-drift.html'))
        out['html_seconds'] = time.perf_counter() - t0
    return out


def side_nannyml(ref: str, cur: str, html: str | None) -> dict:
    import nannyml as nml
    r, c = _read_pandas(ref, cur)
    out = {'rss_loaded': _rss()}
    cats = [n for n in r.columns if n.startswith(CATEGORICAL_PREFIX)]
    t0 = time.perf_counter()
    calc = nml.UnivariateDriftCalculator(column_names=list(r.columns), treat_as_categorical=cats, chunk_number=10)
    calc.fit(r)
    df = calc.calculate(c).filter(period='analysis').to_df()
    out['seconds'] = time.perf_counter() - t0
    alerts, methods = {}, {}
    for name in r.columns:
        for method in {k[1] for k in df.columns if k[0] == name}:
            methods.setdefault(name, []).append(method)
            alerts[name] = alerts.get(name, 0) + int(df[(name, method, 'alert')].sum())
    out['flagged'] = [n for n, a in alerts.items() if a > 0]
    out['alerts_per_column'] = alerts  # chunk alerts out of 10 analysis chunks
    out['chunks'] = int(len(df))
    out['method'] = f'UnivariateDriftCalculator(chunk_number=10) defaults: {sorted({m for v in methods.values() for m in v})}'
    return out


def side_alibi(ref: str, cur: str, html: str | None) -> dict:
    import numpy as np
    from alibi_detect.cd import TabularDrift
    r, c = _read_pandas(ref, cur)
    out = {'rss_loaded': _rss()}
    t0 = time.perf_counter()
    cols = list(r.columns)
    cat_idx = [i for i, n in enumerate(cols) if n.startswith(CATEGORICAL_PREFIX)]
    x_ref, x_cur = np.empty((len(r), len(cols)), np.float32), np.empty((len(c), len(cols)), np.float32)
    for i, n in enumerate(cols):
        if i in cat_idx:
            levels = {v: j for j, v in enumerate(sorted(set(r[n]) | set(c[n])))}
            x_ref[:, i], x_cur[:, i] = r[n].map(levels).to_numpy(), c[n].map(levels).to_numpy()
        else:
            x_ref[:, i], x_cur[:, i] = r[n].to_numpy(), c[n].to_numpy()
    cd = TabularDrift(x_ref, p_val=ALPHA, categories_per_feature={i: None for i in cat_idx}, correction='bonferroni')
    pred = cd.predict(x_cur, drift_type='batch')
    out['seconds'] = time.perf_counter() - t0
    p = pred['data']['p_val']
    out['flagged'] = [n for n, pv in zip(cols, p) if pv < pred['data']['threshold']]
    out['flagged_uncorrected'] = [n for n, pv in zip(cols, p) if pv < ALPHA]
    out['batch_drift'] = int(pred['data']['is_drift'])
    out['method'] = 'TabularDrift(p_val=0.05, correction="bonferroni"): KS (asymp) / chi2_contingency, float32 input'
    return out


SIDES = {'mlwork': side_mlwork, 'scipy': side_scipy, 'evidently': side_evidently,
         'evidently-chi2': lambda r, c, h: side_evidently(r, c, h, chi2=True), 'nannyml': side_nannyml,
         'alibi': side_alibi}


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('side', choices=list(SIDES))
    ap.add_argument('reference')
    ap.add_argument('current')
    ap.add_argument('--html', help='folder for the HTML reports (sides that write one)')
    a = ap.parse_args(argv)
    out = SIDES[a.side](a.reference, a.current, a.html)
    out['rss_peak'] = _peak_rss()
    out['side'] = a.side
    print(json.dumps(out, default=float))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
