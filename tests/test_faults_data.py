"""Fault injection for the dataset store, in real processes: two concurrent loads of one batch store it once;
SIGKILL at each named step of an ingest (the `MLWORK_KILL_AT` test hook) and a retry store it once and leave no
orphan after `clean`; a resized or same-size-changed data file is reported by `mlwork datasets verify` with exit 1
and one line; data files are created 0600 under umask 022; a secret in a commit message is masked; an int a
Float64 column cannot hold exactly is refused.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from mlwork.core import DataError
from mlwork.data.batches import content_hash
from mlwork.data.store import DatasetStore

PY = sys.executable
INGEST = """
    import sys, time
    from pathlib import Path
    import polars as pl
    from mlwork.data.store import DatasetStore
    go = Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.01)
    v = DatasetStore(sys.argv[1]).ingest('t', sys.argv[2], message='load password=hunter2')
    print(v.version, v.reused, flush=True)
"""


def batch(tmp_path: Path, n: int = 50_000, seed: int = 0) -> Path:
    path = tmp_path / f'b{seed}.parquet'
    pl.DataFrame({'id': range(seed * n, (seed + 1) * n), 'x': [float(i % 97) for i in range(n)]}).write_parquet(path)
    return path


def ingest_proc(store: DatasetStore, path: Path, go: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, '-c', textwrap.dedent(INGEST), store.uri, str(path), str(go)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    return DatasetStore(tmp_path / 'data')


def test_two_concurrent_loads_of_one_batch_store_it_once(store, tmp_path):
    store.ingest('t', pl.DataFrame({'id': [-1], 'x': [0.0]}))   # the table exists: both race to append
    path, go = batch(tmp_path), tmp_path / 'go'
    procs = [ingest_proc(store, path, go) for _ in range(3)]
    time.sleep(1.5)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split())
    assert sorted(o[1] for o in outs) == ['False', 'True', 'True']     # one wrote, two found it stored
    assert {o[0] for o in outs} == {'1'}                                # all name the same version
    assert store.version('t') == 1 and store.read('t').height == 50_001
    assert store.read('t#1').height == 50_000


def test_a_first_ingest_raced_by_two_processes_is_stored_once(store, tmp_path):
    path, go = batch(tmp_path, 20_000), tmp_path / 'go'
    procs = [ingest_proc(store, path, go) for _ in range(2)]
    time.sleep(1.5)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert store.read('t').height == 20_000


@pytest.mark.parametrize('step', ['loaded', 'writing', 'committed'])
def test_sigkill_at_each_step_then_retry_stores_once_and_clean_leaves_no_orphan(store, tmp_path, step):
    store.ingest('t', pl.DataFrame({'id': [-1], 'x': [0.0]}))
    path, go = batch(tmp_path, 200_000), tmp_path / 'go'
    go.touch()
    p = ingest_proc(store, path, go, env={'MLWORK_KILL_AT': step})
    p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL
    assert store.version('t') == (1 if step == 'committed' else 0)   # the commit is atomic: all or nothing
    p = ingest_proc(store, path, go)                                  # the retry
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    version, reused = out.split()
    assert (version, reused) == ('1', str(step == 'committed'))
    assert store.version('t') == 1 and store.read('t').height == 200_001
    store.clean('t', min_age_s=0)
    assert store.orphans('t', min_age_s=0) == []
    assert store.verify('t').ok
    assert store.read('t@0').height == 1                               # time travel intact after the clean


def test_append_files_killed_after_staging_leaves_no_scratch(tmp_path):
    store = DatasetStore(tmp_path / 'ws' / 'data', scratch_root=tmp_path / 'ws')
    chunk = tmp_path / 'c.arrow'
    pl.DataFrame({'a': range(100)}).write_ipc(chunk)
    code = f"""
        from pathlib import Path
        from mlwork.data.store import DatasetStore
        DatasetStore({str(store.uri)!r}, scratch_root={str(tmp_path / 'ws')!r}).append_files('t', [Path({str(chunk)!r})], metadata={{'batch': 'b1'}})
    """
    p = subprocess.run([PY, '-c', textwrap.dedent(code)], env={**os.environ, 'MLWORK_KILL_AT': 'staged'}, timeout=120)
    assert p.returncode == -signal.SIGKILL
    assert len(list((tmp_path / 'ws' / 'tmp').iterdir())) == 1         # the dead writer's scratch folder
    v = store.append_files('t', [chunk], metadata={'batch': 'b1'})     # the next writer cleans it, then stores once
    assert list((tmp_path / 'ws' / 'tmp').iterdir()) == []
    assert (v.version, v.reused, store.append_files('t', [chunk], metadata={'batch': 'b1'}).reused) == (0, False, True)


def _cli_verify(store: DatasetStore, ref: str) -> tuple[int, str, str]:
    code = f"""
        import sys
        from mlwork.cli.datasets import _verify
        from mlwork.data.store import DatasetStore
        import argparse, mlwork.cli.datasets as m
        m.open_store = lambda home: DatasetStore({store.uri!r})
        from mlwork.cli.base import CommandFailed
        try:
            d, text = _verify(argparse.Namespace(ref={ref!r}, home=None))
            print(text); sys.exit(0)
        except CommandFailed as e:
            print(e.text); sys.exit(e.code)
    """
    p = subprocess.run([PY, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_verify_reports_a_resized_and_a_same_size_changed_file(store, tmp_path):
    store.ingest('t', pl.DataFrame({'id': [7, 1234567890123, 9], 'x': [0.5, 1.5, 2.5]}))
    store.ingest('t', pl.DataFrame({'id': [10, 11], 'x': [3.0, 4.0]}))
    assert _cli_verify(store, 't')[:2] == (0, 't@1: intact (2 data files, 2 batches re-hashed)\n')
    table = Path(store.table_uri('t'))
    files = sorted(table.glob('*.parquet'), key=lambda f: f.stat().st_mtime)
    f0, f1 = files
    raw = f0.read_bytes()
    f0.write_bytes(raw.replace((1234567890123).to_bytes(8, 'little'), (1234567890124).to_bytes(8, 'little')))
    assert f0.stat().st_size == len(raw) and f0.read_bytes() != raw
    code, out, _ = _cli_verify(store, 't@0')
    assert code == 1 and len(out.splitlines()) == 1 and f0.name in out and 'content of batch t#0 changed' in out
    with pytest.raises(DataError, match=f0.name):
        store.read('t', verify=True)
    f0.write_bytes(raw)
    f1.write_bytes(f1.read_bytes()[:-50])                              # truncated
    code, out, _ = _cli_verify(store, 't')
    assert code == 1 and len(out.splitlines()) == 1 and f1.name in out and 'the Delta log says' in out
    with pytest.raises(DataError, match=f1.name):                      # never a panic, never silent data
        store.read('t')


def test_data_files_are_private_under_umask_022(store, tmp_path):
    old = os.umask(0o022)
    try:
        store.ingest('t', pl.DataFrame({'a': [1, 2]}))
    finally:
        os.umask(old)
    table = Path(store.table_uri('t'))
    files = [f for f in table.rglob('*') if f.is_file()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), \
        {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in [table, table / '_delta_log'])


def test_a_secret_in_the_message_is_masked(store):
    v = store.ingest('t', pl.DataFrame({'a': [1]}), message='monthly load password=hunter2 token: abc')
    assert 'hunter2' not in (v.message or '') and 'abc' not in (v.message or '')
    assert 'hunter2' not in str(store.history('t').to_dicts())


def test_an_int_a_float_column_cannot_hold_is_refused(store):
    store.ingest('t', pl.DataFrame({'x': [0.5]}))
    with pytest.raises(DataError, match='4611686018427387905 would be stored as'):
        store.ingest('t', pl.DataFrame({'x': [2**62 + 1]}))
    assert store.version('t') == 0
    assert store.ingest('t', pl.DataFrame({'x': [2**62]})).version == 1   # exactly representable: lossless


def test_the_same_rows_again_are_one_batch_unless_given_another_id(store):
    f = pl.DataFrame({'a': [1, 2, 3]})
    v0 = store.ingest('t', f)
    again = store.ingest('t', f.reverse())                              # same rows, any order: the same batch
    assert (again.version, again.reused, again.content_hash) == (0, True, v0.content_hash)
    assert store.orphans('t', min_age_s=0) == []                        # its Parquet file, written ahead, is removed
    v1 = store.ingest('t', f, batch_id='second delivery')
    assert (v1.version, v1.reused, store.read('t').height) == (1, False, 6)
    assert content_hash(store.read('t#1')) == v1.content_hash
