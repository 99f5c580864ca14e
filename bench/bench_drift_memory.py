"""Peak memory of the drift analysis at 10 M rows (the issue's target: under 2× the Arrow size of the two frames).

    python bench/bench_drift_memory.py [--rows 10000000] [--report]

The frames (`mlwork.drift.power.drift_benchmark`: 20 numeric + 5 categorical columns, 5 drifted) are written to Parquet
once by this process; a fresh child process reads them, then fits and scores a `DriftDetector` (and with `--report`
builds the drift summary and HTML report) while a thread samples its RSS every 10 ms. Reported: the Arrow size of the
two frames (strings counted as Arrow's large_string: 8-byte offsets + data), the child's RSS before loading (interpreter and imports), after loading, and at its peak, and
(peak − before loading) ÷ Arrow size — the memory the data and the analysis take together, relative to the data.

    python bench/bench_drift_memory.py --credit-pii [--rows 1000000]

The drift issue's credit case instead: two synthetic credit batches with PII columns (names, emails, phone and card
numbers; `generate('credit', pii=True)`, seeds 0 and 1, income drifted by 0.5 in the second), compared as
`mlwork drift REF CUR` compares them (its own code, run in the child after the imports: id-like columns skipped,
text columns left to the detector).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r'''
import json, sys, threading, time, gc
import psutil
proc = psutil.Process()
import polars as pl
from mlwork.drift.univariate import DriftDetector
from mlwork.drift.report import drift_report, reuse_sorted
gc.collect()
before = proc.memory_info().rss
peak = [before]; stop = [False]
def poll():
    while not stop[0]:
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.01)
th = threading.Thread(target=poll, daemon=True); th.start()
ref, cur = pl.read_parquet(sys.argv[1]), pl.read_parquet(sys.argv[2])
def arrow_size(f):  # bytes of the frame as Arrow (strings as large_string: 8-byte offsets + data; polars' estimated_size counts only the data)
    return sum(int(f[c].str.len_bytes().sum() or 0) + 8 * (f.height + 1) + (f.height + 7) // 8 * (f[c].null_count() > 0)
               if f.schema[c] == pl.String else f[c].estimated_size() for c in f.columns)
arrow = arrow_size(ref) + arrow_size(cur)
gc.collect(); loaded = proc.memory_info().rss
t0 = time.perf_counter(); det = DriftDetector().fit(ref); t1 = time.perf_counter(); res = det.score(cur, keep_sorted=sys.argv[3] == '1' and reuse_sorted(cur)); t2 = time.perf_counter()
report_s = None
if sys.argv[3] == '1':
    drift_report(res, sys.argv[4], reference=ref, current=cur, detector=det); report_s = time.perf_counter() - t2
stop[0] = True; th.join()
print(json.dumps({'arrow_bytes': arrow, 'rss_before_load': before, 'rss_loaded': loaded, 'rss_peak': peak[0],
                  'fit_s': t1 - t0, 'score_s': t2 - t1, 'report_s': report_s, 'drifted': res.drifted}))
'''

CLI_CHILD = r'''
import json, sys, threading, time, gc, contextlib, io
import psutil
proc = psutil.Process()
import polars as pl
from mlwork.cli.main import main
from mlwork.drift.univariate import DriftDetector
gc.collect()
before = proc.memory_info().rss
peak = [before]; stop = [False]
def poll():
    while not stop[0]:
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.01)
th = threading.Thread(target=poll, daemon=True); th.start()
out = io.StringIO(); t0 = time.perf_counter()
with contextlib.redirect_stdout(out):
    code = main(['drift', sys.argv[1], sys.argv[2], '--json'])
t1 = time.perf_counter()
stop[0] = True; th.join()
assert code in (0, 3), code
d = json.loads(out.getvalue())
print(json.dumps({'rss_before_load': before, 'rss_loaded': None, 'rss_peak': peak[0], 'fit_s': t1 - t0, 'score_s': 0.0,
                  'report_s': None, 'drifted': d.get('drifted', []), 'skipped': d.get('skipped_key_columns', [])}))
'''


def arrow_size(f) -> int:
    "Bytes of a frame as Arrow (strings as large_string: 8-byte offsets + data)."
    import polars as pl
    return sum(int(f[c].str.len_bytes().sum() or 0) + 8 * (f.height + 1) + (f.height + 7) // 8 * (f[c].null_count() > 0)
               if f.schema[c] == pl.String else f[c].estimated_size() for c in f.columns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rows', type=int, default=10_000_000)
    ap.add_argument('--report', action='store_true', help='also build the drift summary and HTML report')
    ap.add_argument('--credit-pii', action='store_true', help="the credit batches with PII columns, through `mlwork drift`'s code")
    ap.add_argument('--out', type=Path, default=HERE / 'results')
    a = ap.parse_args()
    data = a.out / 'drift-data'
    data.mkdir(parents=True, exist_ok=True)
    kind = 'credit-pii-' if a.credit_pii else ''
    ref, cur = data / f'{kind}ref-{a.rows}.parquet', data / f'{kind}cur-{a.rows}.parquet'
    if not (ref.exists() and cur.exists()):
        if a.credit_pii:
            from mlwork.synthetic import Drift, generate
            r = generate('credit', n_rows=a.rows, seed=0, pii=True).frame
            c = generate('credit', n_rows=a.rows, seed=1, pii=True, drift=Drift(features=('income',), magnitude=0.5)).frame
        else:
            from mlwork.drift.power import drift_benchmark
            r, c, _ = drift_benchmark(a.rows, seed=0)
        r.write_parquet(ref); c.write_parquet(cur)
        del r, c
    mode = 'cli' if a.credit_pii else '1' if a.report else '0'
    out = subprocess.run([sys.executable, '-c', CLI_CHILD if a.credit_pii else CHILD, str(ref), str(cur), mode,
                          str(a.out / f'drift-memory-{a.rows}.html')], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    if a.credit_pii:
        import polars as pl
        m['arrow_bytes'] = arrow_size(pl.read_parquet(ref)) + arrow_size(pl.read_parquet(cur))
    G = 2**30
    ratio = (m['rss_peak'] - m['rss_before_load']) / m['arrow_bytes']
    m['ratio_peak_over_arrow'] = ratio
    m['case'] = 'credit+pii via mlwork drift' if a.credit_pii else 'drift_benchmark'
    print(f"{m['case']}: {a.rows:,} rows: Arrow size of the two frames {m['arrow_bytes'] / G:.2f} GiB; RSS before loading "
          f"{m['rss_before_load'] / G:.2f} GiB, loaded {(m['rss_loaded'] or 0) / G:.2f} GiB, peak {m['rss_peak'] / G:.2f} GiB; "
          f"(peak − before loading) = {ratio:.2f}× the Arrow size; fit {m['fit_s']:.1f} s, score {m['score_s']:.1f} s"
          + (f", report {m['report_s']:.1f} s" if m['report_s'] is not None else '') + f"; drifted: {', '.join(m['drifted'])}")
    (a.out / f'drift-memory-{kind}{a.rows}.json').write_text(json.dumps(m, indent=2))


if __name__ == '__main__':
    main()
