"""The overhead of `mlwork run PIPELINE` against the same library calls in one plain Python process, on the same data.

Papermill, a kernel, the HTML report, the manifest and the index are the overhead; each side is a whole process timed
from start to exit.

    .venv/bin/python bench/bench_run.py [--pipeline train|drift] [--repeat 3] [--warmup 0] [--register] [--omp-passive] [--keep]

Set-up, not timed: a temporary workspace with the bundled ACS data (`mlwork init`, `mlwork run ingest`,
`mlwork run ingest -p year 2016`: acs@0 the 2015 reference, acs@1 the 2016 window, and their labels).

The two sides, alternated (mlwork first in odd repeats, the plain process first in even ones, so a machine getting
busier affects both alike):

- **mlwork**: `mlwork run PIPELINE --no-progress` (with `-p dry_run true` where the pipeline has `dry_run`, so repeats
  register nothing; `--register` runs it for real, and then both sides register a version each time);
- **plain**: the pipeline notebook's code cells, in order, as one Python script (the parameters cell, then the same
  values `mlwork run` injects: `home`, `dry_run`), run by a fresh interpreter in a scratch folder (the notebook's
  `output_dir()` is then `./outputs`, and its `record_*` calls are the no-ops they are outside a run). Both sides pay
  interpreter start, imports and reading the data; only mlwork's side renders figures and rich outputs into a
  notebook, exports HTML and writes a manifest and the index: that is the overhead measured.

mlwork's time is broken down from the executed notebook's papermill timestamps (notebook start and end, each cell's
start and end) against the process's start and exit: CLI start (interpreter, imports, parameter check, lock, manifest,
papermill reading the notebook), kernel start, cells, kernel shutdown, and what follows papermill (records, audit anchor,
HTML, manifest, index, exit). The HTML export (`mlwork.pipelines.html.notebook_html` on the executed notebook, with
the import of nbconvert it pays in a run), the manifest + index writing and the audit anchor are timed apart, in a
process that has imported what `mlwork run` has by then. Both sides' metrics are compared (they must be equal: same
data, same seed). CPU time (user + system of every process of a side, the kernel included) is reported beside the wall
time: on a busy machine it is the steadier of the two. `--omp-passive` sets OMP_WAIT_POLICY=passive for both sides,
which keeps LightGBM's training time steady on a loaded machine.

The markdown tables go to stdout, progress to stderr, everything (every sample, the breakdown, per-cell times, load
averages) to bench/results/run-<pipeline>-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / 'results'
MARKER = 'BENCH-RUN-RESULT '
TARGET_S, TARGET_SHARE = 5.0, 0.20  # the issue: overhead under 5 s or 20 % of the run, whichever is larger

# Time the HTML export and the manifest + index writing of a finished run apart, in a process that has imported what
# `mlwork run` has imported when it gets there (papermill and the runner), so the HTML's time includes nbconvert's import.
AFTER = '''import json, sys, time
from pathlib import Path
import papermill, mlwork.pipelines.runs as runs
from mlwork.core import open_workspace
folder, scratch = Path(sys.argv[1]), Path(sys.argv[2])
man = json.loads((folder / 'manifest.json').read_text())
t0 = time.perf_counter()
from mlwork.pipelines.html import notebook_html
t1 = time.perf_counter()
notebook_html(folder / 'notebook.ipynb', scratch / 'report.html', manifest=man)
t2 = time.perf_counter()
notebook_html(folder / 'notebook.ipynb', scratch / 'report2.html', manifest=man)
t3 = time.perf_counter()
ws = open_workspace(man['workspace'])
runs.write_manifest(ws, man)  # the same manifest, rewritten as the run wrote it
t4 = time.perf_counter()
runs.refresh_index(ws, folder.parent)
t5 = time.perf_counter()
from mlwork.audit import AuditLog
AuditLog.for_workspace(ws).anchor('bench:' + man['run_id'])  # as the run anchors its manifest (one more entry, in the bench's workspace)
t6 = time.perf_counter()
print(json.dumps({'html_import_s': t1 - t0, 'html_s': t2 - t1, 'html_warm_s': t3 - t2, 'manifest_s': t4 - t3, 'index_s': t5 - t4,
                  'audit_s': t6 - t5}))
'''


def cli() -> list[str]:
    "The `mlwork` command of the interpreter running this benchmark."
    exe = Path(sys.executable).with_name('mlwork')
    return [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from mlwork.cli.main import main; sys.exit(main())']


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    env['MLWORK_HOME'] = str(home)
    return env


def check(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def setup(root: Path) -> tuple[Path, dict[str, str]]:
    "A workspace with the bundled ACS 2015 reference and 2016 window (not timed)."
    home = root / '.mlwork'
    env = env_for(home)
    for args in (['init'], ['run', 'ingest', '--no-progress'], ['run', 'ingest', '--no-progress', '-p', 'year', '2016']):
        t = time.perf_counter()
        check([*cli(), *args], root, env)
        print(f"set-up: mlwork {' '.join(args)} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    return home, env


def plain_script(notebook: Path, values: dict[str, Any]) -> str:
    "The notebook's code cells as one script: the parameters cell, the injected values, the rest; times every cell."
    nb = json.loads(notebook.read_text(encoding='utf-8'))
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    lines = ['import time as _bench_time',
             '_bench_metrics = {}',
             'import mlwork.pipelines.context as _bench_context  # record_metric: a no-op outside a run; here it keeps the value',
             "_bench_context.record_metric = lambda name, value: _bench_metrics.__setitem__(name, value)",
             '_bench_marks = [_bench_time.time()]']
    heads = []
    for i, c in enumerate(code):
        src = ''.join(c['source'])
        heads.append(next((s for s in src.splitlines() if s.strip() and not s.startswith('#')), '')[:60])
        lines += [f'# cell {i}', src]
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            lines += [f'{k} = {v!r}' for k, v in values.items()]  # as papermill injects them
        lines.append('_bench_marks.append(_bench_time.time())')
    lines += ['import json as _bench_json',
              f"print({MARKER!r} + _bench_json.dumps({{'marks': _bench_marks, 'metrics': _bench_metrics, 'heads': {heads!r}}}, default=str))"]
    return '\n'.join(lines) + '\n'


def parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


def cpu_children() -> float:
    "User + system CPU seconds of the waited-for child processes so far (a run's kernel included: its parent waits for it)."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_mlwork(root: Path, env: dict[str, str], pipeline: str, texts: list[str], scratch: Path) -> dict[str, Any]:
    "`mlwork run` as a process, timed; its breakdown from the executed notebook and the manifest."
    before = {p.name for p in (root / 'reports').glob(f'{pipeline}-*')}
    cmd = [*cli(), 'run', pipeline, '--no-progress', *texts]
    load0 = os.getloadavg()[0]
    c0, spawn, t0 = cpu_children(), time.time(), time.perf_counter()
    r = subprocess.run(cmd, check=False, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall, exit_, cpu = time.perf_counter() - t0, time.time(), cpu_children() - c0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    [folder] = [p for p in (root / 'reports').glob(f'{pipeline}-*') if p.name not in before]
    man = json.loads((folder / 'manifest.json').read_text())
    nb = json.loads((folder / 'notebook.ipynb').read_text())
    pm = nb['metadata']['papermill']
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code']
    times = [(parse_time(c['metadata']['papermill']['start_time']), parse_time(c['metadata']['papermill']['end_time'])) for c in cells]
    pm_start, pm_end = parse_time(pm['start_time']), parse_time(pm['end_time'])
    first, last = min(s for s, _ in times), max(e for _, e in times)
    injected = [i for i, c in enumerate(cells) if 'injected-parameters' in c['metadata'].get('tags', [])]
    out = json.loads(check([sys.executable, '-c', AFTER, str(folder), str(scratch)], root, env).stdout.strip().splitlines()[-1])
    parts = {'cli_start_s': pm_start - spawn, 'kernel_start_s': first - pm_start, 'cells_span_s': last - first,
             'cells_sum_s': sum(e - s for s, e in times), 'kernel_stop_s': pm_end - last, 'after_papermill_s': exit_ - pm_end,
             **out}
    return {'wall_s': wall, 'cpu_s': cpu, 'run_id': man['run_id'], 'status': man['status'], 'duration_s': man['duration_s'],
            'metrics': man['metrics'], 'parts': parts, 'load_1min': load0,
            'cells_s': [e - s for i, (s, e) in enumerate(times) if i not in injected]}


def run_plain(script: Path, env: dict[str, str], scratch: Path) -> dict[str, Any]:
    "The same calls as one plain Python process, timed; its interpreter start, cells and exit."
    work = scratch / f'plain-{time.time_ns()}'
    work.mkdir()
    load0 = os.getloadavg()[0]
    c0, spawn, t0 = cpu_children(), time.time(), time.perf_counter()
    r = subprocess.run([sys.executable, str(script)], check=False, cwd=work, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    wall, exit_, cpu = time.perf_counter() - t0, time.time(), cpu_children() - c0
    if r.returncode != 0:
        raise RuntimeError(f'the plain script exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}')
    res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith(MARKER))[len(MARKER):])
    marks = res['marks']
    shutil.rmtree(work, ignore_errors=True)
    return {'wall_s': wall, 'cpu_s': cpu, 'metrics': res['metrics'], 'heads': res['heads'], 'load_1min': load0,
            'parts': {'start_s': marks[0] - spawn, 'cells_span_s': marks[-1] - marks[0], 'exit_s': exit_ - marks[-1]},
            'cells_s': [b - a for a, b in itertools.pairwise(marks)]}


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def cell(xs: list[float]) -> str:
    return f'{median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})' if len(xs) > 1 else f'{xs[0]:.2f}'


def summary(ml: list[dict[str, Any]], pl: list[dict[str, Any]]) -> dict[str, Any]:
    "The medians, the overhead (wall and CPU), the ratio and the verdict, for the JSON."
    mw, pw = median([r['wall_s'] for r in ml]), median([r['wall_s'] for r in pl])
    mc, pc = median([r['cpu_s'] for r in ml]), median([r['cpu_s'] for r in pl])
    outside = lambda r: r['wall_s'] - r['parts']['cells_span_s']
    return {'mlwork_median_s': mw, 'plain_median_s': pw, 'overhead_s': mw - pw, 'overhead_pct_of_plain': 100 * (mw - pw) / pw,
            'ratio': mw / pw, 'target_s': max(TARGET_S, TARGET_SHARE * pw), 'meets_target': mw - pw <= max(TARGET_S, TARGET_SHARE * pw),
            'mlwork_cpu_median_s': mc, 'plain_cpu_median_s': pc, 'cpu_overhead_s': mc - pc, 'cpu_ratio': mc / pc,
            'overhead_outside_cells_median_s': median([outside(a) - outside(b) for a, b in zip(ml, pl)])}


def tables(pipeline: str, texts: list[str], ml: list[dict[str, Any]], pl: list[dict[str, Any]]) -> str:
    mw, pw = [r['wall_s'] for r in ml], [r['wall_s'] for r in pl]
    over = median(mw) - median(pw)
    pairs = [a - b for a, b in zip(mw, pw)]
    limit = max(TARGET_S, TARGET_SHARE * median(pw))
    meets = over <= limit
    cmd = f"mlwork run {pipeline} --no-progress {' '.join(texts)}".rstrip()
    mc, pc = [r['cpu_s'] for r in ml], [r['cpu_s'] for r in pl]
    outside = lambda r: r['wall_s'] - r['parts']['cells_span_s']
    fixed = [outside(a) - outside(b) for a, b in zip(ml, pl)]
    inside = [a['parts']['cells_span_s'] - b['parts']['cells_span_s'] for a, b in zip(ml, pl)]
    cpairs = [a - b for a, b in zip(mc, pc)]
    climit = max(TARGET_S, TARGET_SHARE * median(pc))
    out = [f'| `{pipeline}` pipeline, whole process, median (min–max) of {len(ml)} | wall s | CPU s (user + system, all its processes) |',
           '|---|---:|---:|',
           f'| `{cmd}` | {cell(mw)} | {cell(mc)} |',
           f'| the same calls in one plain Python process | {cell(pw)} | {cell(pc)} |',
           (f'| **overhead**: difference of the medians (paired differences min–max) | **{over:.2f}** ({min(pairs):.2f}–{max(pairs):.2f}) '
            f'| {median(mc) - median(pc):.2f} ({min(cpairs):.2f}–{max(cpairs):.2f}) |'),
           f'| overhead as % of the plain run | {100 * over / median(pw):.0f} % | {100 * (median(mc) - median(pc)) / median(pc):.0f} % |',
           f'| ratio mlwork ÷ plain | {median(mw) / median(pw):.2f}× | {median(mc) / median(pc):.2f}× |',
           (f'| target: overhead under max(5 s, 20 % of the plain run) = {limit:.2f} s (CPU: {climit:.2f} s) '
            f'| {"**meets**" if meets else "**misses**"} | {"meets" if median(mc) - median(pc) <= climit else "misses"} |'),
           (f'| overhead outside the cells: (wall − cells) of mlwork − (wall − cells) of plain, paired | {cell(fixed)} '
            f'| {"meets" if median(fixed) <= limit else "misses"} the target (steadier than the whole: no training in it) |'),
           f'| overhead inside the cells (kernel: rich outputs, figures rendered to PNG; and noise), paired | {cell(inside)} | |',
           '']
    p = lambda k: [r['parts'][k] for r in ml]
    q = lambda k: [r['parts'][k] for r in pl]
    after_rest = [r['parts']['after_papermill_s'] - r['parts']['html_import_s'] - r['parts']['html_s']
                  - r['parts']['manifest_s'] - r['parts']['index_s'] - r['parts']['audit_s'] for r in ml]
    gaps = [a - b for a, b in zip(p('cells_span_s'), p('cells_sum_s'))]
    out += ['| where the time goes (s), median (min–max) | mlwork | plain |', '|---|---:|---:|',
            ("| process start to the first cell (interpreter, imports, parameter check, lock, manifest; papermill reading the notebook) "
             f"| {cell(p('cli_start_s'))} | {cell(q('start_s'))} |"),
            f"| … of which the kernel start (papermill's notebook start to the first cell) | {cell(p('kernel_start_s'))} | – |",
            f"| cells, first start to last end | {cell(p('cells_span_s'))} | {cell(q('cells_span_s'))} |",
            f"| … of which between cells (papermill saving the notebook after each) | {cell(gaps)} | – |",
            f"| kernel shutdown (last cell end to papermill's end) | {cell(p('kernel_stop_s'))} | – |",
            f"| after papermill to process exit | {cell(p('after_papermill_s'))} | {cell(q('exit_s'))} |",
            f"| … HTML report: import nbconvert (timed apart) | {cell(p('html_import_s'))} | – |",
            f"| … HTML report: `notebook_html` (timed apart; warm, second call: {cell(p('html_warm_s'))}) | {cell(p('html_s'))} | – |",
            f"| … manifest + index writing (timed apart) | {cell([a + b for a, b in zip(p('manifest_s'), p('index_s'))])} | – |",
            f"| … audit anchor (timed apart, with the audit module's import) | {cell(p('audit_s'))} | – |",
            f"| … the rest: papermill writing the notebook, records, printing the result, interpreter exit | {cell(after_rest)} | – |",
            '']
    heads = pl[0]['heads']
    nbc = [[r['cells_s'][i] for r in ml] for i in range(len(heads))]
    plc = [[r['cells_s'][i] for r in pl] for i in range(len(heads))]
    out += ['| code cell (median s) | in the kernel | plain | difference |', '|---|---:|---:|---:|']
    out += [f'| `{h.replace("|", "/")}` | {median(a):.2f} | {median(b):.2f} | {median(a) - median(b):+.2f} |'
            for h, a, b in zip(heads, nbc, plc)]
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--pipeline', default='train', help='a built-in pipeline that reads the ACS workspace: train (default) or drift')
    ap.add_argument('--repeat', type=int, default=3, help='timed runs per side, alternated (default 3)')
    ap.add_argument('--warmup', type=int, default=0, help='untimed runs per side first (default 0; the set-up already ran two)')
    ap.add_argument('--register', action='store_true', help='no dry_run: every run (both sides) registers a model version')
    ap.add_argument('--omp-passive', action='store_true',
                    help="OMP_WAIT_POLICY=passive for both sides: LightGBM's OpenMP threads sleep instead of spinning while they wait, "
                         "which on a busy machine otherwise makes the training cell's time swing several-fold")
    ap.add_argument('--keep', action='store_true', help='keep the temporary workspace and say where it is')
    ap.add_argument('--out', type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from mlwork.pipelines.params import find_pipeline
    pipe = find_pipeline(args.pipeline)
    root = Path(tempfile.mkdtemp(prefix=f'bench-run-{pipe.name}-'))
    try:
        home, env = setup(root)
        if args.omp_passive:
            env['OMP_WAIT_POLICY'] = 'passive'
        values: dict[str, Any] = {'home': str(home.resolve())} if 'home' in pipe.parameters else {}
        texts: list[str] = []
        if 'dry_run' in pipe.parameters and not args.register:
            values['dry_run'] = True
            texts = ['-p', 'dry_run', 'true']
        script = root / f'plain_{pipe.name}.py'
        script.write_text(plain_script(pipe.path, values), encoding='utf-8')
        scratch = root / 'scratch'
        scratch.mkdir()
        ml: list[dict[str, Any]] = []
        pl: list[dict[str, Any]] = []
        for i in range(args.warmup + args.repeat):
            timed = i >= args.warmup
            order = ['mlwork', 'plain'] if i % 2 == 0 else ['plain', 'mlwork']
            for side in order:
                r = run_mlwork(root, env, pipe.name, texts, scratch) if side == 'mlwork' else run_plain(script, env, scratch)
                print(f"{'run' if timed else 'warm-up'} {i + 1 - args.warmup if timed else i + 1}: {side:<6} {r['wall_s']:6.2f} s"
                      f"  (load {r['load_1min']:.2f})", file=sys.stderr)
                if timed:
                    (ml if side == 'mlwork' else pl).append(r)
        same = all(m['metrics'] == p['metrics'] for m in ml for p in pl)
        if not same:
            print(f"warning: the sides' metrics differ: {ml[0]['metrics']} vs {pl[0]['metrics']}", file=sys.stderr)
        print(tables(pipe.name, texts, ml, pl))
        loads = [r['load_1min'] for r in ml + pl]
        print(f"\nmetrics equal on both sides: {same} ({ml[0]['metrics']}); {os.cpu_count()} CPUs, "
              f"1-minute load average {min(loads):.2f}–{max(loads):.2f} at the samples' starts")
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')
        path = args.out / f'run-{pipe.name}-{stamp}.json'
        path.write_text(json.dumps({
            'benchmark': 'run', 'pipeline': pipe.name, 'command': ['mlwork', 'run', pipe.name, '--no-progress', *texts],
            'args': {k: str(v) for k, v in vars(args).items()}, 'injected': values, 'summary': {**summary(ml, pl), 'metrics_equal': same},
            'mlwork': ml, 'plain': pl,
            'environment': {'python': platform.python_version(), 'cpus': os.cpu_count(), 'machine': platform.machine()}},
            indent=2, default=str))
        print(f'wrote {path}', file=sys.stderr)
    finally:
        if args.keep:
            print(f'workspace kept: {root}', file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
