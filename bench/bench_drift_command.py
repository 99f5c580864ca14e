"""The whole drift command against its peers, each as a process of its own: interpreter start, imports, reading
the Parquet files, the analysis and (where asked) the HTML report, all timed.

    .venv/bin/python bench/bench_drift_command.py [--rows 1000000] [--repeat 3]

The data: 20 numeric + 5 categorical columns, reference and current of `--rows` rows each, with the issue's five
mild drifts: `num_00` mean +0.05 sd, `num_05` sd x1.05, `num_01` (lognormal) mu +0.03, `num_03` (uniform) moved by
2 % of its width, `cat_2`'s probabilities mixed 85/15 with another distribution. Written once as Parquet, so
every side reads the same bytes. The sides, alternated within each repeat so a machine getting busier affects all:

- `mlwork drift REF CUR --report F.html` against Evidently 0.7 `DataDriftPreset()` + `save_html`
  (bench/peers/evidently_drift_script.py, run by the peers' venv: MLWORK_PEERS_PYTHON, default .peers-venv/bin/python);
- `mlwork drift REF CUR` against a plain scipy script (bench/peers/scipy_drift_script.py: `ks_2samp` /
  `chi2_contingency`, Bonferroni);
- `python -c "import mlwork"` and `mlwork --help` (target: under 0.5 s), beside `python -c pass`.

Reported per side: the median wall time of the process and its min-max, the median peak RSS (the child's
ru_maxrss from `os.wait4`), the exit code, and the ratios peer / mlwork. The full result goes to
bench/results/drift-command-<UTC time>.json, the markdown table to stdout.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / 'results'
PEERS_PYTHON = os.environ.get('MLWORK_PEERS_PYTHON', str(ROOT / '.peers-venv' / 'bin' / 'python'))
MLWORK = str(Path(sys.executable).with_name('mlwork'))
TRUTH = ['num_00', 'num_01', 'num_03', 'num_05', 'cat_2']


def mild_benchmark(n_rows: int, seed: int = 0):
    "Reference and current frames (20 numeric + 5 categorical columns) with the issue's five mild drifts."
    import numpy as np
    import polars as pl
    rng = np.random.default_rng(seed)
    n_cats = (3, 5, 8, 12, 4)
    probs = [np.sort(rng.dirichlet(np.full(k, 2.0)))[::-1] for k in n_cats]
    other = rng.dirichlet(np.full(n_cats[2], 2.0))
    def draw(r, i: int, part: int):
        kind = i % 5
        if kind == 0:
            loc, sd = 10 + i, 1 + i / 10
            if part and i == 0:
                loc += 0.05 * sd  # mean +0.05 sd
            if part and i == 5:
                sd *= 1.05  # sd x1.05
            return r.normal(loc, sd, n_rows)
        if kind == 1:
            return r.lognormal(0.03 if part and i == 1 else 0.0, 0.5, n_rows)  # mu +0.03
        if kind == 2:
            return r.exponential(2.0, n_rows)
        if kind == 3:
            lo = 0.1 if part and i == 3 else 0.0  # range moved by 2 % of its width
            return r.uniform(lo, lo + 5, n_rows)
        return r.poisson(4.0, n_rows).astype(float)
    frames = []
    for part in (0, 1):
        r = np.random.default_rng([seed, part])
        cols = {f'num_{i:02d}': draw(r, i, part) for i in range(20)}
        for j, k in enumerate(n_cats):
            p = 0.85 * probs[j] + 0.15 * other if part and j == 2 else probs[j]
            cols[f'cat_{j}'] = pl.Series(r.choice(k, n_rows, p=p / p.sum())).cast(pl.String)
        frames.append(pl.DataFrame(cols))
    return frames[0], frames[1], list(TRUTH)


def write_frames(rows: int, seed: int, ref: Path, cur: Path) -> None:
    reference, current, _ = mild_benchmark(rows, seed)
    reference.write_parquet(ref)
    current.write_parquet(cur)


def parquet_files(rows: int, seed: int, folder: Path) -> tuple[Path, Path]:
    "The two Parquet files, written once by a child process (so this one stays small: a child's peak RSS counts its parent's at fork)."
    folder.mkdir(parents=True, exist_ok=True)
    ref, cur = folder / f'mild-{rows}-{seed}-reference.parquet', folder / f'mild-{rows}-{seed}-current.parquet'
    if not (ref.exists() and cur.exists()):
        code = (f'import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); from bench_drift_command import write_frames; '
                f'from pathlib import Path; write_frames({rows}, {seed}, Path({str(ref)!r}), Path({str(cur)!r}))')
        subprocess.run([sys.executable, '-c', code], check=True)
    return ref, cur


def run_process(argv: list[str], cap: float, cwd: Path) -> dict:
    "Run one process to its end: wall time, peak RSS (ru_maxrss of the child), exit code, the tail of its output."
    with tempfile.TemporaryFile('w+') as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(cwd))
        deadline = t0 + cap
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return {'wall_s': time.perf_counter() - t0, 'capped': True, 'maxrss': usage.ru_maxrss * 1024}
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        out.seek(0)
        return {'wall_s': wall, 'maxrss': usage.ru_maxrss * 1024, 'code': os.waitstatus_to_exitcode(status),
                'tail': out.read()[-1500:]}


def sides(ref: Path, cur: Path, html: Path) -> list[tuple[str, str, list[str], set[int]]]:
    "(key, label, argv, exit codes that mean it ran) per side."
    py = sys.executable
    return [('import', 'python -c "import mlwork"', [py, '-c', 'import mlwork'], {0}),
            ('help', 'mlwork --help', [MLWORK, '--help'], {0}),
            ('python', 'python -c pass (the interpreter alone)', [py, '-c', 'pass'], {0}),
            ('mlwork-report', 'mlwork drift REF CUR --report F.html', [MLWORK, 'drift', str(ref), str(cur), '--report',
                                                                          str(html / 'mlwork-drift.html')], {0, 1, 3}),
            ('evidently', 'Evidently DataDriftPreset() + save_html', [PEERS_PYTHON, str(BENCH_DIR / 'peers' / 'evidently_drift_script.py'),
                                                                      str(ref), str(cur), str(html / 'evidently-drift.html')], {0}),
            ('mlwork', 'mlwork drift REF CUR', [MLWORK, 'drift', str(ref), str(cur)], {0, 1, 3}),
            ('scipy', 'plain scipy script (ks_2samp / chi2_contingency)', [py, str(BENCH_DIR / 'peers' / 'scipy_drift_script.py'),
                                                                           str(ref), str(cur)], {0, 1})]


PAIRS = [('mlwork-report', 'evidently', 50.0), ('mlwork', 'scipy', 3.0)]  # (mlwork side, peer, target ratio)


def _versions(python: str) -> dict:
    code = ("import json; from importlib import metadata as m\nout={}\n"
            "for n in ['numpy','pandas','polars','scipy','pyarrow','evidently','mlwork']:\n"
            "    try: out[n]=m.version(n)\n    except Exception: pass\nprint(json.dumps(out))")
    try:
        return json.loads(subprocess.run([python, '-c', code], capture_output=True, text=True, check=True).stdout)
    except Exception as e:  # noqa: BLE001
        return {'error': str(e)}


def summary(samples: list[dict]) -> dict:
    ok = [s for s in samples if not s.get('capped') and not s.get('failed')]
    if not ok:
        return {'runs': 0}
    walls, rss = [s['wall_s'] for s in ok], [s['maxrss'] for s in ok]
    return {'runs': len(ok), 'median_s': statistics.median(walls), 'min_s': min(walls), 'max_s': max(walls),
            'median_rss': statistics.median(rss)}


def table(result: dict) -> str:
    s = result['summary']
    lines = [f"Whole drift command, {result['args']['rows']:,} rows x 25 columns per side ({result['started'][:10]}, "
             f"{result['environment']['cpu_count']} CPU cores, Python {result['environment']['python']}): every side a "
             f"process of its own, medians of {result['args']['repeat']} alternated runs, times include interpreter start, "
             "imports, reading the Parquet files and writing the report.", '',
             '| side | wall time (min-max) | peak RSS | exit |', '|---|---:|---:|---:|']
    for key, label, _, _ in result['sides']:
        m = s[key]
        if not m.get('runs'):
            lines.append(f'| {label} | failed or stopped | - | - |')
            continue
        codes = sorted({x.get('code') for x in result['samples'][key] if 'code' in x})
        lines.append(f"| {label} | {m['median_s']:.2f} s ({m['min_s']:.2f}-{m['max_s']:.2f}) | "
                     f"{m['median_rss'] / 2**20:,.0f} MiB | {','.join(map(str, codes))} |")
    lines += ['', '| comparison | time ratio (peer / mlwork) | target | RSS ratio |', '|---|---:|---:|---:|']
    for ours, peer, target in PAIRS:
        a, b = s.get(ours, {}), s.get(peer, {})
        if a.get('runs') and b.get('runs'):
            r = b['median_s'] / a['median_s']
            lines.append(f"| {ours} vs {peer} | **{r:.1f}x** | {target:g}x {'met' if r >= target else 'NOT met'} | "
                         f"{b['median_rss'] / a['median_rss']:.2f}x |")
    for key in ('import', 'help'):
        if s.get(key, {}).get('runs'):
            t = s[key]['median_s']
            lines.append(f"| {key} | {t:.3f} s | 0.5 s {'met' if t < 0.5 else 'NOT met'} | |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=lambda s: int(s.replace('_', '')), default=1_000_000)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--sides', default='import,help,python,mlwork-report,evidently,mlwork,scipy',
                    help='comma-separated sides to run')
    ap.add_argument('--cap', type=float, default=600.0, help='seconds before a process is stopped (default 600)')
    ap.add_argument('--out', type=Path, default=RESULTS_DIR)
    a = ap.parse_args(argv)
    wanted = a.sides.split(',')
    started = dt.datetime.now(dt.timezone.utc)
    ref, cur = parquet_files(a.rows, a.seed, a.out / 'drift-data')
    html = a.out / 'drift-command-html'
    html.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in sides(ref, cur, html) if s[0] in wanted]
    samples: dict[str, list[dict]] = {k: [] for k, *_ in chosen}
    for i in range(a.repeat):
        for key, label, argv_, ok_codes in chosen:
            res = run_process(argv_, a.cap, ROOT)
            res['failed'] = not res.get('capped') and res.get('code') not in ok_codes
            samples[key].append(res)
            print(f"run {i + 1}/{a.repeat} {label}: {res['wall_s']:.2f} s, peak {res['maxrss'] / 2**20:,.0f} MiB, "
                  f"exit {res.get('code', 'stopped')}" + (f"\n{res.get('tail', '')}" if res['failed'] else ''),
                  file=sys.stderr, flush=True)
    result = {'benchmark': 'drift-command', 'started': started.isoformat(timespec='seconds'),
              'args': {'rows': a.rows, 'repeat': a.repeat, 'seed': a.seed, 'sides': wanted, 'cap': a.cap},
              'data': {'reference': str(ref), 'current': str(cur), 'drifted': TRUTH},
              'environment': {'python': platform.python_version(), 'platform': platform.platform(),
                              'cpu_count': os.cpu_count(), 'main': _versions(sys.executable),
                              'peers': _versions(PEERS_PYTHON)},
              'sides': [(k, label, argv_, sorted(codes)) for k, label, argv_, codes in chosen],
              'samples': samples, 'summary': {k: summary(v) for k, v in samples.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"drift-command-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=1, default=float) + '\n')
    print(table(result))
    print(f'\nresults: {path}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
