"""mlwork.data.validation against pandera's polars backend with equivalent rules, on a 25-column batch
(20 numeric, 5 categorical) with failures of every row check injected in about 2 % of the rows.

`python bench/run.py validate` times both sides. `python bench/bench_validate.py memory --rows N` measures
the peak resident memory of one `validate` call in a fresh subprocess against the batch's Arrow size."""
from __future__ import annotations

import sys

from harness import Case, Measure

NAME = 'validate'
DESCRIPTION = 'data contracts (every check, per-row reasons, quarantine) vs pandera polars DataFrameSchema.validate(lazy=True)'
DEFAULT_ROWS = 10_000_000
DEFAULT_PEER_ROWS = 10_000_000

CATEGORIES = {f'cat{j}': [f'c{j}_{k}' for k in range(4 + 2 * j)] for j in range(5)}


def make_batch(rows: int, seed: int, fail: float | str = 0.02):
    "The 25-column batch: id (key), 9 normal and 5 lognormal floats, 5 Poisson ints, 5 String categoricals; `fail='all'`: every row fails 25 checks."
    import numpy as np
    import polars as pl
    rng = np.random.default_rng(seed)
    cols: dict = {'id': np.arange(rows, dtype=np.int64)}
    for i in range(9):
        cols[f'x{i}'] = rng.normal(i, 1 + i / 4, rows)
    for i in range(5):
        cols[f'amount{i}'] = np.round(np.exp(rng.normal(8 + i / 2, 0.6, rows)), 2)
    for i in range(5):
        cols[f'count{i}'] = rng.poisson(2 + i, rows).astype(np.int64)
    for name, cats in CATEGORIES.items():
        cols[name] = pl.Series(name, cats).gather(rng.integers(0, len(cats), rows))
    frame = pl.DataFrame(cols)
    if not fail:
        return frame
    if fail == 'all':  # the worst case: every numeric value above its max, every category unseen, one repeated key
        return frame.with_columns(pl.lit(0, dtype=pl.Int64).alias('id'),
                                  *[(pl.col(c) + 1e12).alias(c) for c in frame.columns[1:15]],
                                  *[(pl.col(c) + 10**12).alias(c) for c in frame.columns[15:20]],
                                  *[(pl.col(c) + '_unseen').alias(c) for c in CATEGORIES])
    # every row check fails somewhere: fail/6 of the rows each for not_null, finite, range, outlier, category, duplicate_key
    k = max(1, int(rows * fail / 6))
    pick = lambda: pl.Series(rng.choice(rows, k, replace=False))
    injected = {'x0': None,            # not_null (no column of the reference has nulls)
                'x1': float('nan'),    # finite
                'x2': float('inf'),    # finite
                'amount0': -5.0,       # range: negative
                'amount1': 1e5,        # outlier: above q99 + 3 IQR, below the range's max
                'count0': 10_000,      # range: above max
                'cat0': 'unseen',      # category
                'id': 0}               # duplicate_key
    return frame.with_columns(frame[c].clone().scatter(rng.choice(rows, k, replace=False), v) for c, v in injected.items())


def contract_for(seed: int):
    "The contract inferred from a clean reference of 100,000 rows (so no column is nullable)."
    from mlwork.data.contracts import infer_contract
    return infer_contract(make_batch(100_000, seed + 1, fail=0), key='id', name='bench')


def pandera_schema(contract):
    "A pandera polars schema with the same rules: dtype, nullability, uniqueness, range, outlier bounds, finiteness, categories."
    import polars as pl
    import pandera.polars as pa
    finite = pa.Check(lambda data: data.lazyframe.select(pl.col(data.key).is_finite() | pl.col(data.key).is_null()),
                      name='finite')
    columns = {}
    for name, rule in contract.columns.items():
        checks = []
        if rule.min is not None:
            checks.append(pa.Check.ge(rule.min))
        if rule.max is not None:
            checks.append(pa.Check.le(rule.max))
        if rule.q_low is not None:
            checks.append(pa.Check.ge(rule.q_low, name='outlier_low'))
        if rule.q_high is not None:
            checks.append(pa.Check.le(rule.q_high, name='outlier_high'))
        if rule.allowed is not None:
            checks.append(pa.Check.isin(rule.allowed))
        if rule.dtype.startswith('Float') and rule.finite:
            checks.append(finite)
        columns[name] = pa.Column(rule.polars_dtype, checks, nullable=rule.nullable, unique=name in (contract.key or []))
    return pa.DataFrameSchema(columns)


def _pandera(schema, frame):
    import pandera.polars as pa

    def run():
        try:
            return schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as e:
            return e.failure_cases
    return run


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    from mlwork.data.validation import validate
    contract = contract_for(seed)
    schema = pandera_schema(contract)
    out = []
    for n in sorted({max(1, rows // 10), rows}):
        frame = make_batch(n, seed)
        label = f'{n // 1_000_000}M' if n >= 1_000_000 else f'{n:,}'
        out.append(Case(f'validate {label}', Measure('mlwork validate (every check, reasons, quarantine)',
                                                     lambda f=frame: validate(f, contract), n),
                        Measure('pandera polars validate(lazy=True)', _pandera(schema, frame), n, key=f'pandera{n}'),
                        note='25 columns (20 numeric, 5 categorical), about 2 % of rows failing; '
                             'pandera returns failure cases, mlwork also builds valid and quarantine frames.'))
    return out


def _memory_child(rows: int, seed: int, fail: str = '0.02') -> None:
    "Run in a fresh process: peak RSS of one validate call, sampled every 5 ms, against the batch's Arrow size."
    import gc, json, threading, time
    import psutil
    from mlwork.data.validation import validate
    contract = contract_for(seed)
    frame = make_batch(rows, seed, fail if fail == 'all' else float(fail))
    arrow = frame.estimated_size()
    gc.collect()
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = False

    def sample():
        nonlocal peak
        while not done:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    report = validate(frame, contract)
    seconds = time.perf_counter() - t0
    done = True
    t.join()
    peak = max(peak, proc.memory_info().rss)
    print(json.dumps({'rows': rows, 'fail': fail, 'arrow_bytes': arrow, 'rss_before': base, 'peak_rss': peak,
                      'peak_extra_over_arrow': (peak - base) / arrow, 'seconds': seconds,
                      'valid_rows': report.valid.height, 'quarantined_rows': report.quarantine.height,
                      'failed_checks': report.checks.filter(~report.checks['passed']).height,
                      'reasons': int(report.quarantine['_reasons'].list.len().sum() or 0),
                      'quarantine_bytes': report.quarantine.estimated_size(), 'valid_bytes': report.valid.estimated_size()}))


def memory(rows: int, seed: int = 0, fail: float | str = 0.02) -> dict:
    "Peak memory of validate on `rows` rows (`fail='all'`: every row fails), measured in a subprocess."
    import json, subprocess
    from pathlib import Path
    here = Path(__file__).resolve().parent
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), '_memory_child', str(rows), str(seed), str(fail)],
                       capture_output=True, text=True, cwd=here, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == '_memory_child':
        _memory_child(int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])
    elif len(sys.argv) >= 2 and sys.argv[1] == 'memory':
        import argparse
        ap = argparse.ArgumentParser(prog='bench_validate.py memory')
        ap.add_argument('--rows', type=int, nargs='+', default=[1_000_000, 10_000_000])
        ap.add_argument('--seed', type=int, default=0)
        ap.add_argument('--fail', default='0.02', help="share of failing rows, or 'all' (every row fails 25 checks)")
        args = ap.parse_args(sys.argv[2:])
        print('| rows | failing | Arrow size | peak RSS above baseline | ratio | quarantine size | reasons | seconds | quarantined |\n'
              '|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for n in args.rows:
            m = memory(n, args.seed, args.fail)
            print(f"| {n:,} | {args.fail} | {m['arrow_bytes'] / 2**20:,.0f} MiB | {(m['peak_rss'] - m['rss_before']) / 2**20:,.0f} MiB | "
                  f"{m['peak_extra_over_arrow']:.2f}× | {m['quarantine_bytes'] / 2**20:,.0f} MiB | {m['reasons']:,} | "
                  f"{m['seconds']:.2f} | {m['quarantined_rows']:,} |", flush=True)
    else:
        sys.exit('run `python bench/run.py validate`, or `python bench/bench_validate.py memory --rows 1000000`')
