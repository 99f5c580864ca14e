"""CSV ingest: `DatasetStore.ingest` of a 1 M-row CSV (schema from a bounded sample, dates parsed only where they
look like dates, a Delta commit) against reading the same file with polars' defaults (`pl.read_csv`), in the same run.

`python bench/run.py ingest_csv` times both sides through the harness (ratio = mlwork rows/s / peer rows/s; the
issue's target is a ratio of at least 1/3, i.e. ingest within 3x of a plain read). `python bench/bench_ingest_csv.py
[--rows N]` times one of each and prints the ratio of the times directly."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness import Case, Measure

NAME = 'ingest_csv'
DESCRIPTION = 'CSV ingest into a Delta dataset (bounded-sample schema, dates where they look like dates) vs pl.read_csv with defaults'
DEFAULT_ROWS = 1_000_000
DEFAULT_PEER_ROWS = 1_000_000

_TMP = tempfile.TemporaryDirectory(prefix='mlwork-bench-csv-')


def make_csv(rows: int, seed: int) -> Path:
    "A credit-like CSV: an id, a timestamp and a date column, 12 floats, 4 ints, 4 string categories (about 170 B a row)."
    import datetime as dt
    import numpy as np
    import polars as pl
    path = Path(_TMP.name) / f'batch-{rows}-{seed}.csv'
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    frame = pl.DataFrame({
        'id': np.arange(rows),
        'timestamp': pl.Series(rng.integers(0, 365 * 86400, rows) * 1_000_000).cast(pl.Duration('us')) + start,
        'day': (pl.Series(rng.integers(0, 365, rows) * 86_400_000_000).cast(pl.Duration('us')) + start).dt.date(),
        **{f'x{i}': np.round(rng.normal(i, 1, rows), 4) for i in range(12)},
        **{f'n{i}': rng.poisson(3 + i, rows) for i in range(4)},
        **{f'cat{i}': pl.Series(['north', 'south', 'east', 'west'])[rng.integers(0, 4, rows)] for i in range(4)},
    })
    frame.write_csv(path)
    return path


def _ingest(path: Path) -> None:
    from mlwork.data.store import DatasetStore
    with tempfile.TemporaryDirectory(dir=_TMP.name) as d:
        DatasetStore(d).ingest('bench', path)


def _read(path: Path) -> None:
    import polars as pl
    pl.read_csv(path)


def _load(path: Path) -> None:
    from mlwork.data.batches import load_batch
    load_batch(path)


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    path = make_csv(rows, seed)
    peer = lambda: Measure('polars pl.read_csv (defaults)', lambda: _read(path), rows, key='read_csv')  # noqa: E731
    return [Case(f'read a {rows:,}-row CSV as ingest does', Measure('mlwork load_batch(csv)', lambda: _load(path), rows), peer()),
            Case(f'ingest a {rows:,}-row CSV', Measure('mlwork DatasetStore.ingest(csv)', lambda: _ingest(path), rows), peer())]


if __name__ == '__main__':
    import time
    rows = int(sys.argv[sys.argv.index('--rows') + 1]) if '--rows' in sys.argv else DEFAULT_ROWS
    path = make_csv(rows, 0)
    _read(path)  # warm the page cache
    t0 = time.perf_counter(); _read(path); read_s = time.perf_counter() - t0
    t0 = time.perf_counter(); _load(path); load_s = time.perf_counter() - t0
    t0 = time.perf_counter(); _ingest(path); ingest_s = time.perf_counter() - t0
    print(f'{rows:,} rows, {path.stat().st_size / 1e6:.0f} MB: pl.read_csv {read_s:.2f} s; load_batch {load_s:.2f} s '
          f'(ratio {load_s / read_s:.2f}x); whole ingest {ingest_s:.2f} s (ratio {ingest_s / read_s:.2f}x); target: within 3x')
