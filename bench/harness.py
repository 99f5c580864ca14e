"""The benchmark harness: time each case's mlwork side and its peer in the same run, report medians,
spread and the throughput ratio, write JSON and print a markdown table.

A benchmark is a module `bench/bench_<name>.py` exposing

    NAME: str                      # what `run.py NAME` calls it
    DESCRIPTION: str               # one line, shown by `run.py --list`
    DEFAULT_ROWS: int              # rows for the mlwork side (and for peers fast enough to keep up)
    DEFAULT_PEER_ROWS: int         # rows for peers too slow to run at full size
    def cases(rows, peer_rows, seed) -> list[Case]

Nothing is run at import time: `cases` returns closures, and the harness calls them.
"""
from __future__ import annotations

import datetime as dt
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / 'results'


@dataclass
class Measure:
    "One side of a case: a callable doing the work once (its result is dropped) and the rows it makes."
    name: str  # shown in the table, e.g. "sklearn make_classification (10 features)"
    fn: Callable[[], Any]
    rows: int
    key: str | None = None  # measures with the same key are timed once per run and shared between cases


@dataclass
class Case:
    "A line of the table: mlwork's measure and, optionally, the peer it is compared with."
    label: str
    ours: Measure
    peer: Measure | None = None
    note: str = ''


@dataclass
class Timing:
    name: str
    rows: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.median

    def to_dict(self) -> dict[str, Any]:
        s = sorted(self.samples)
        q1, _, q3 = statistics.quantiles(s, n=4, method='inclusive') if len(s) > 1 else (s[0],) * 3
        return {'name': self.name, 'rows': self.rows, 'samples_s': s, 'median_s': self.median, 'min_s': s[0],
                'max_s': s[-1], 'q1_s': q1, 'q3_s': q3, 'rows_per_s': self.rows_per_s}


def discover() -> dict[str, ModuleType]:
    "Every benchmark module in bench/, by NAME."
    found = {}
    for path in sorted(BENCH_DIR.glob('bench_*.py')):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "NAME"):  # standalone scripts (bench_drift_memory, bench_registry) have their own command line
            found[module.NAME] = module
    return found


def _time_once(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    del result
    gc.collect()
    return elapsed


def run_cases(cases: list[Case], repeat: int, warmup: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    "Time every case: warm-up calls first, then `repeat` rounds alternating mlwork and peer."
    shared: dict[str, Timing] = {}
    out = []
    for case in cases:
        ours = Timing(case.ours.name, case.ours.rows)
        peer = None
        peer_todo = False
        if case.peer is not None:
            key = case.peer.key or f'{case.label}/peer'
            peer_todo = key not in shared
            peer = shared.setdefault(key, Timing(case.peer.name, case.peer.rows))
        log(f'- {case.label}: {case.ours.name}' + (f' vs {case.peer.name}' if case.peer else '')
            + ('' if peer_todo or case.peer is None else ' (peer already timed)'))
        for _ in range(warmup):
            _time_once(case.ours.fn)
            if peer_todo:
                _time_once(case.peer.fn)
        for i in range(repeat):
            ours.samples.append(_time_once(case.ours.fn))
            if peer_todo:
                peer.samples.append(_time_once(case.peer.fn))
            log(f'    round {i + 1}/{repeat}: mlwork {ours.samples[-1]:.3f} s'
                + (f', peer {peer.samples[-1]:.3f} s' if peer_todo else ''))
        row = {'label': case.label, 'note': case.note, 'ours': ours.to_dict(), 'peer': peer.to_dict() if peer else None,
               'ratio': ours.rows_per_s / peer.rows_per_s if peer else None}
        out.append(row)
    return out


def environment() -> dict[str, Any]:
    "Where the numbers come from."
    names = ['mlwork', 'numpy', 'polars', 'scipy', 'scikit-learn', 'faker', 'pandera', 'whylogs']
    versions = {}
    for n in names:
        try:
            versions[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return {'python': platform.python_version(), 'platform': platform.platform(), 'machine': platform.machine(),
            'cpu_count': os.cpu_count(), 'processor': platform.processor() or None, 'packages': versions}


def _fmt_rate(x: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if x >= scale:
            return f'{x / scale:.3g} {unit}'
    return f'{x:.3g}'


def _fmt_rows(n: int) -> str:
    return f'{n / 1e6:g} M' if n >= 1_000_000 else f'{n / 1e3:g} k' if n >= 1_000 else str(n)


def markdown(result: dict[str, Any]) -> str:
    "The results as a markdown table, with a line saying where and how they were measured."
    env, args = result['environment'], result['args']
    lines = [f"Benchmark `{result['benchmark']}`: median of {args['repeat']} runs after {args['warmup']} warm-up, "
             f"{env['cpu_count']} CPU cores, Python {env['python']}, "
             + ', '.join(f'{k} {v}' for k, v in env['packages'].items()) + f" ({result['started'][:10]}).",
             '',
             '| case | rows | mlwork median (min–max) | mlwork rows/s | peer | peer rows | peer median (min–max) | peer rows/s | ratio |',
             '|---|---:|---:|---:|---|---:|---:|---:|---:|']
    for c in result['cases']:
        o, p = c['ours'], c['peer']
        cells = [c['label'], _fmt_rows(o['rows']), f"{o['median_s']:.2f} s ({o['min_s']:.2f}–{o['max_s']:.2f})",
                 _fmt_rate(o['rows_per_s'])]
        if p:
            cells += [p['name'], _fmt_rows(p['rows']), f"{p['median_s']:.2f} s ({p['min_s']:.2f}–{p['max_s']:.2f})",
                      _fmt_rate(p['rows_per_s']), f"{c['ratio']:.2f}×"]
        else:
            cells += ['—'] * 5
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'ratio = mlwork rows/s ÷ peer rows/s (above 1: mlwork is faster).']
    notes = [f"- {c['label']}: {c['note']}" for c in result['cases'] if c['note']]
    return '\n'.join(lines + (['', *notes] if notes else []))


def run_benchmark(module: ModuleType, *, repeat: int, warmup: int, rows: int | None, peer_rows: int | None,
                  seed: int, only: list[str] | None, out_dir: Path = RESULTS_DIR,
                  log: Callable[[str], None] = print) -> tuple[dict[str, Any], Path]:
    "Run one benchmark module; write its JSON under `out_dir`; return the result and the file."
    rows = rows or module.DEFAULT_ROWS
    peer_rows = peer_rows or module.DEFAULT_PEER_ROWS
    cases = module.cases(rows, peer_rows, seed)
    if only:
        unknown = [o for o in only if o not in {c.label for c in cases}]
        if unknown:
            msg = f"unknown case(s) {', '.join(unknown)}; {module.NAME} has: {', '.join(c.label for c in cases)}"
            raise SystemExit(msg)
        cases = [c for c in cases if c.label in only]
    started = dt.datetime.now(dt.timezone.utc)
    log(f'{module.NAME}: {len(cases)} case(s), {rows:,} rows (peers that cannot keep up: {peer_rows:,}), '
        f'{warmup} warm-up + {repeat} timed runs each')
    timed = run_cases(cases, repeat, warmup, log)
    result = {'benchmark': module.NAME, 'description': module.DESCRIPTION,
              'started': started.isoformat(timespec='seconds'),
              'seconds': round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
              'args': {'repeat': repeat, 'warmup': warmup, 'rows': rows, 'peer_rows': peer_rows, 'seed': seed, 'only': only},
              'environment': environment(), 'cases': timed}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{module.NAME}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=1) + '\n')
    return result, path


if __name__ == '__main__':  # pragma: no cover
    sys.exit('run bench/run.py instead')
