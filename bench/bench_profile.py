"""mlwork.data.profile.profile_frame against whylogs' own `why.log(pandas=df)` on the same frame: 25 columns
(10 float, 2 % nulls in half of them; 10 int of 10 to 100,000 distinct values; 5 categorical Enums).
whylogs is too slow for 10 M rows: it runs at --peer-rows and the ratio compares rows per second.
Each mlwork case also notes its peak memory, sampled from the process RSS, against the frame's Arrow size."""
from __future__ import annotations

import functools
import threading
import time

from harness import Case, Measure

NAME = 'profile'
DESCRIPTION = 'whylogs profiles: profile_frame (vectorised) vs whylogs why.log(pandas=df)'
DEFAULT_ROWS = 10_000_000
DEFAULT_PEER_ROWS = 1_000_000  # whylogs profiles about 50,000 rows × 25 columns per second


@functools.lru_cache(maxsize=2)
def bench_frame(rows: int, seed: int):
    "25 columns: f0…f9 normal floats (f0…f4 with 2 % nulls), i0…i9 ints (10…100,000 distinct), cat0…cat4 Enums."
    import numpy as np
    import polars as pl
    rng = np.random.default_rng(seed)
    cols = {}
    for j in range(10):
        x = pl.Series(rng.normal(j, 1 + j, rows))
        if j < 5:
            x = x.scatter(rng.choice(rows, rows // 50, replace=False), None)
        cols[f'f{j}'] = x
    for j in range(10):
        cols[f'i{j}'] = pl.Series(rng.integers(0, 10 ** (j % 5 + 1), rows))
    cats = [f'level_{k}' for k in range(12)]
    for j in range(5):
        cols[f'cat{j}'] = pl.Series(np.array(cats)[rng.integers(0, 12 - j, rows)]).cast(pl.Enum(cats))
    return pl.DataFrame(cols)


def _with_memory(fn, case_holder: list, rows: int, seed: int):
    "Run `fn`, sampling the process RSS every 5 ms; write the peak into the case's note."
    import psutil

    def run():
        frame = bench_frame(rows, seed)
        proc = psutil.Process()
        base = proc.memory_info().rss
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.005)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            result = fn(frame)
        finally:
            done.set()
            t.join()
        arrow = frame.estimated_size()
        extra = max(peak[0] - base, 0)
        case_holder[0].note = (f'peak memory while profiling: frame {arrow / 2**20:,.0f} MiB (Arrow) + '
                               f'{extra / 2**20:,.0f} MiB working = {(arrow + extra) / arrow:.2f}× the Arrow size.')
        return result
    return run


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    def ours(n: int, label: str) -> Case:
        from mlwork.data.profile import profile_frame
        holder: list = []
        case = Case(label, Measure(f'profile_frame ({n:,} rows)', _with_memory(profile_frame, holder, n, seed), n), peer)
        holder.append(case)
        return case

    def why_log():
        import mlwork.data.profile  # noqa: F401  (the numpy 2 shim whylogs needs)
        import whylogs as why
        pdf = _pandas(peer_rows, seed)
        return why.log(pandas=pdf)

    peer = Measure(f'whylogs why.log(pandas=df) ({peer_rows:,} rows)', why_log, peer_rows, key='whylogs')
    small = min(rows, 1_000_000)
    out = [ours(small, 'frame-1M' if small == 1_000_000 else f'frame-{small}')]
    if rows > small:
        out.append(ours(rows, f'frame-{rows // 1_000_000}M' if rows % 1_000_000 == 0 else f'frame-{rows}'))
    return out


@functools.lru_cache(maxsize=1)
def _pandas(rows: int, seed: int):
    return bench_frame(rows, seed).to_pandas()  # built once, outside the timing (first call is the warm-up)
