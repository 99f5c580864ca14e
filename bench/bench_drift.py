"""Drift detection against its peers on the same bytes: 20 numeric + 5 categorical columns
(`mlwork.drift.power.drift_benchmark`: `num_00`, `num_06`, `num_12` shifted by 0.2 reference standard
deviations, `num_18` widened by 30 %, 10 % of `cat_2` moved to its rarest category), reference and current
of the same size, written once as Parquet so every side reads the same file.

Two ways to run it:

    .venv/bin/python bench/run.py drift --rows 1000000 --repeat 3      # harness: mlwork vs a scipy loop, in process
    .venv/bin/python bench/bench_drift.py --rows 100000 1000000         # every peer, each side in its own process

The second runs each side once per size as a subprocess (`bench/peers/drift_worker.py`): mlwork and scipy
with this interpreter, Evidently 0.7, NannyML and alibi-detect with the peers' venv (MLWORK_PEERS_PYTHON,
default .peers-venv/bin/python; build it from bench/peers/requirements.txt). Each side reports the
time of its work after the Parquet is loaded, its peak RSS (the child's ru_maxrss from `os.wait4`), the
RSS after loading, and the columns it flagged; the table shows drifted columns found (of 5), false alarms
(of 20) and ratios against mlwork. A side taking longer than --cap seconds is stopped and reported as such.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import RESULTS_DIR, Case, Measure

NAME = 'drift'
DESCRIPTION = 'DriftDetector fit+score vs a scipy ks_2samp/chi2_contingency loop (bench_drift.py: Evidently, NannyML, alibi-detect)'
DEFAULT_ROWS = 1_000_000
DEFAULT_PEER_ROWS = 1_000_000

BENCH_DIR = Path(__file__).resolve().parent
WORKER = BENCH_DIR / 'peers' / 'drift_worker.py'
PEERS_PYTHON = os.environ.get('MLWORK_PEERS_PYTHON', str(Path(__file__).resolve().parents[1] / '.peers-venv' / 'bin' / 'python'))
SIDES = [('mlwork', 'mlwork DriftDetector', 'main'), ('scipy', 'scipy loop (KS / chi2, Bonferroni)', 'main'),
         ('evidently', 'Evidently 0.7 DataDriftPreset()', 'peers'),
         ('evidently-chi2', 'Evidently 0.7 DataDriftPreset(cat_method="chisquare")', 'peers'),
         ('nannyml', 'NannyML UnivariateDriftCalculator (10 chunks)', 'peers'),
         ('alibi', 'alibi-detect TabularDrift (Bonferroni)', 'peers')]

LABELS = {side: label for side, label, _ in SIDES}


@functools.lru_cache(maxsize=2)
def frames(rows: int, seed: int):
    from mlwork.drift.power import drift_benchmark
    return drift_benchmark(rows, seed=seed)


def parquet_files(rows: int, seed: int, folder: Path) -> tuple[Path, Path, list[str]]:
    "Write the benchmark frames once; every side reads these bytes."
    folder.mkdir(parents=True, exist_ok=True)
    ref, cur = folder / f'drift-{rows}-{seed}-reference.parquet', folder / f'drift-{rows}-{seed}-current.parquet'
    reference, current, truth = frames(rows, seed)
    if not (ref.exists() and cur.exists()):
        reference.write_parquet(ref)
        current.write_parquet(cur)
    return ref, cur, truth


# -- harness API: in-process, mlwork vs the scipy loop ------------------------------------------------
def _scipy_loop(reference, current) -> list[str]:
    import numpy as np
    from scipy import stats
    pvals = {}
    for name in reference.columns:
        if reference.schema[name].is_numeric():
            pvals[name] = stats.ks_2samp(reference[name].to_numpy(), current[name].to_numpy()).pvalue
        else:
            a, b = reference[name].value_counts(), current[name].value_counts()
            ra, cb = dict(zip(*a.to_dict(as_series=False).values())), dict(zip(*b.to_dict(as_series=False).values()))
            cats = sorted(set(ra) | set(cb))
            pvals[name] = stats.chi2_contingency(np.array([[ra.get(k, 0) for k in cats], [cb.get(k, 0) for k in cats]]),
                                                 correction=False).pvalue
    return [n for n, p in pvals.items() if p < 0.05 / len(pvals)]


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    def ours():
        from mlwork.drift.univariate import DriftDetector
        reference, current, _ = frames(rows, seed)
        return DriftDetector().fit(reference).score(current)

    def scipy_loop():
        reference, current, _ = frames(rows, seed)
        return _scipy_loop(reference, current)

    return [Case('fit+score', Measure(f'DriftDetector fit+score ({rows:,} rows each side)', ours, rows),
                 Measure('scipy ks_2samp / chi2_contingency loop', scipy_loop, rows, key='scipy'),
                 note='25 columns (20 numeric, 5 categorical); the frames are built before timing.')]


# -- every peer, each side in its own process -------------------------------------------------------
def run_side(side: str, python: str, ref: Path, cur: Path, html: Path, cap: float) -> dict:
    "Run one side as a child process; its JSON plus the child's peak RSS from os.wait4."
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(BENCH_DIR.parent), os.environ.get('PYTHONPATH')]))}
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, str(WORKER), side, str(ref), str(cur), '--html', str(html)],
                                stdout=out, stderr=err, env=env, cwd=str(BENCH_DIR))
        deadline = t0 + cap
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {'side': side, 'capped': True, 'wall_s': time.perf_counter() - t0, 'cap_s': cap,
                        'child_maxrss': usage.ru_maxrss * 1024}
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            return {'side': side, 'error': err.read()[-3000:], 'returncode': proc.returncode, 'wall_s': wall}
        res = json.loads(lines[-1])
        res.update(wall_s=wall, child_maxrss=usage.ru_maxrss * 1024)
        return res


def _versions(python: str) -> dict:
    code = ("import json; from importlib import metadata as m\nout={}\n"
            "for n in ['numpy','pandas','polars','scipy','pyarrow','evidently','nannyml','alibi-detect','mlwork']:\n"
            "    try: out[n]=m.version(n)\n    except Exception: pass\nprint(json.dumps(out))")
    try:
        return json.loads(subprocess.run([python, '-c', code], capture_output=True, text=True, check=True).stdout)
    except Exception as e:  # noqa: BLE001
        return {'error': str(e)}


def base_total(run: dict, side: dict) -> float | None:
    "Evidently's default analysis + its HTML report, divided by this side's analysis + report."
    ev = next((s for s in run['sides'] if s['side'] == 'evidently' and 'seconds' in s and not s.get('capped')), None)
    if side['side'] != 'mlwork' or ev is None:
        return None
    return (ev['seconds'] + (ev.get('html_seconds') or 0)) / (side['seconds'] + side['html_seconds'])

def table(result: dict) -> str:
    lines = [f"Drift benchmark ({result['started'][:10]}, {result['environment']['cpu_count']} CPU cores, "
             f"Python {result['environment']['python']}): each side once, in its own process; time = work after "
             "the Parquet is loaded; peak RSS = the process's maximum resident memory (imports and data included).", '',
             '| rows | side | time | × mlwork time | peak RSS | × mlwork RSS | RSS − after load | found (of 5) | false alarms (of 20) |',
             '|---:|---|---:|---:|---:|---:|---:|---:|---:|']
    for run in result['runs']:
        base = next((s for s in run['sides'] if s['side'] == 'mlwork' and 'seconds' in s), None)
        for s in run['sides']:
            cells = [f"{run['rows']:,}", LABELS[s['side']]]
            if s.get('capped'):
                cells += [f"> {s['cap_s']:.0f} s (stopped)", '—', f"{s['child_maxrss'] / 2**20:,.0f} MiB"] + ['—'] * 4
            elif 'error' in s:
                cells += ['error'] + ['—'] * 6
            else:
                t, rss = s['seconds'], s['child_maxrss']
                cells += [f'{t:.2f} s', f"{t / base['seconds']:.2f}×" if base else '—', f'{rss / 2**20:,.0f} MiB',
                          f"{rss / base['child_maxrss']:.2f}×" if base else '—',
                          f"{max(rss - s['rss_loaded'], 0) / 2**20:,.0f} MiB",
                          str(len(set(s['flagged']) & set(run['truth']))), str(len(set(s['flagged']) - set(run['truth'])))]
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '× mlwork: peer ÷ mlwork (above 1: mlwork is faster / smaller). NannyML flags a column when any of its '
              '10 analysis chunks alerts. alibi-detect: feature p < 0.05 / 25 (its batch-level Bonferroni threshold).']
    for run in result['runs']:
        for s in run['sides']:
            if s.get('html_seconds') is not None:
                lines.append(f"- {run['rows']:,} rows, {s['side']}: HTML report {s['html_seconds']:.2f} s more "
                             f"(analysis + report: {s['seconds'] + s['html_seconds']:.2f} s"
                             + (f", {base_total(run, s):.1f}× faster than Evidently's analysis + report" if base_total(run, s) else '') + ').')
            if s.get('rescore_seconds') is not None:
                lines.append(f"- {run['rows']:,} rows, mlwork: fit {s['fit_seconds']:.2f} s, score {s['score_seconds']:.2f} s; "
                             f"scoring a new batch against the fitted reference {s['rescore_seconds']:.2f} s.")
            if 'chi2_vs_scipy' in s:
                pairs = ', '.join(f"{k} {v['evidently_chisquare']:.3g} vs {v['scipy_chi2_contingency']:.3g}"
                                  for k, v in s['chi2_vs_scipy'].items())
                lines.append(f"- {run['rows']:,} rows, Evidently chisquare p-value vs scipy chi2_contingency: {pairs}.")
            if 'alerts_per_column' in s:
                fa = {k: v for k, v in s['alerts_per_column'].items() if v and k not in run['truth']}
                lines.append(f"- {run['rows']:,} rows, NannyML chunk alerts on undrifted columns: {fa or 'none'}.")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=lambda s: int(s.replace('_', '')), nargs='+', default=[100_000, 1_000_000])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--sides', default=','.join(s for s, _, _ in SIDES), help='comma-separated sides to run')
    ap.add_argument('--cap', type=float, default=300.0, help='seconds before a side is stopped (default 300)')
    ap.add_argument('--out', type=Path, default=RESULTS_DIR)
    a = ap.parse_args(argv)
    wanted = a.sides.split(',')
    started = dt.datetime.now(dt.timezone.utc)
    runs = []
    for rows in a.rows:
        ref, cur, truth = parquet_files(rows, a.seed, a.out / 'drift-data')
        frames.cache_clear()  # the frames are on disk now; do not hold them in this process
        html = a.out / 'drift-html' / str(rows)
        html.mkdir(parents=True, exist_ok=True)
        sides = []
        for side, label, venv in SIDES:
            if side not in wanted:
                continue
            print(f'{rows:,} rows: {label} …', file=sys.stderr, flush=True)
            res = run_side(side, sys.executable if venv == 'main' else PEERS_PYTHON, ref, cur, html, a.cap)
            print(f"    {res.get('seconds', float('nan')):.2f} s, peak {res.get('child_maxrss', 0) / 2**20:,.0f} MiB, "
                  f"flagged {res.get('flagged')}" + (f" ERROR {res['error'][-300:]}" if 'error' in res else ''),
                  file=sys.stderr, flush=True)
            sides.append(res)
        runs.append({'rows': rows, 'truth': truth, 'parquet': [str(ref), str(cur)], 'sides': sides})
    result = {'benchmark': 'drift-peers', 'started': started.isoformat(timespec='seconds'),
              'args': {'rows': a.rows, 'seed': a.seed, 'sides': wanted, 'cap': a.cap},
              'environment': {'python': platform.python_version(), 'platform': platform.platform(),
                              'cpu_count': os.cpu_count(), 'main': _versions(sys.executable),
                              'peers': _versions(PEERS_PYTHON)},
              'runs': runs}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"drift-peers-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=1, default=float) + '\n')
    print(table(result))
    print(f'\nresults: {path}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(BENCH_DIR))
    sys.exit(main())
