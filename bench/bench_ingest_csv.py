"""CSV ingest: `DatasetStore.ingest` of a 1 M-row CSV (schema from a bounded sample, dates parsed only where they
look like dates, a Delta commit) against reading the same file with polars' defaults (`pl.read_csv`), in the same run.

`python bench/run.py ingest_csv` times both sides through the harness (ratio = mlwork rows/s / peer rows/s; the
issue's target is a ratio of at least 1/3, i.e. ingest within 3x of a plain read). `python bench/bench_ingest_csv.py
[--rows N]` times one of each and prints the ratio of the times directly; `--phases [--repeat N]` times each step of
an ingest on its own (wall and CPU seconds: on a busy machine the CPU column is the steadier one)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

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


def phases(path: Path, repeat: int) -> list[tuple[str, float, float]]:
    "Median wall and CPU seconds (all threads) of each step of a CSV ingest, each timed on its own, and of the whole ingest."
    import statistics
    import time
    from mlwork.data import batches, store
    def timed(fn: Callable[[], Any]) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return statistics.median(walls), statistics.median(cpus)
    stored, _ = batches.to_storage(batches.load_batch(path)[0])
    def parquet() -> None:
        with tempfile.TemporaryDirectory(dir=_TMP.name) as d:
            store._parquet_add(Path(d), stored)
    def hash_and_parquet() -> None:  # as ingest runs them: the file written in a thread while the hash is computed
        with tempfile.TemporaryDirectory(dir=_TMP.name) as d:
            wait = store._parquet_ahead(store.DatasetStore(d), 'bench', stored)
            batches.content_hash(stored)
            wait()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ('pl.read_csv (defaults)', lambda: _read(path)),
        ('read as ingest does (load_batch)', lambda: _load(path)),
        ('content hash', lambda: batches.content_hash(stored)),
        ('Parquet file', parquet),
        ('content hash + Parquet file (overlapped)', hash_and_parquet),
        ('whole ingest', lambda: _ingest(path))]
    return [(label, *timed(fn)) for label, fn in steps]


if __name__ == '__main__':
    import time
    rows = int(sys.argv[sys.argv.index('--rows') + 1]) if '--rows' in sys.argv else DEFAULT_ROWS
    path = make_csv(rows, 0)
    _read(path)  # warm the page cache
    if '--phases' in sys.argv:  # where the time goes: python bench/bench_ingest_csv.py --phases [--repeat N]
        repeat = int(sys.argv[sys.argv.index('--repeat') + 1]) if '--repeat' in sys.argv else 5
        _ingest(path)
        for label, wall, cpu in phases(path, repeat):
            print(f'{label:42s} wall {wall:6.3f} s   cpu {cpu:6.3f} s')
        sys.exit(0)
    t0 = time.perf_counter(); _read(path); read_s = time.perf_counter() - t0
    t0 = time.perf_counter(); _load(path); load_s = time.perf_counter() - t0
    t0 = time.perf_counter(); _ingest(path); ingest_s = time.perf_counter() - t0
    print(f'{rows:,} rows, {path.stat().st_size / 1e6:.0f} MB: pl.read_csv {read_s:.2f} s; load_batch {load_s:.2f} s '
          f'(ratio {load_s / read_s:.2f}x); whole ingest {ingest_s:.2f} s (ratio {ingest_s / read_s:.2f}x); target: within 3x')
