"""Schema evolution that cannot wedge: extra columns, columns that come and go, names that differ only in case,
spill folders of killed runs, private files, and a CSV streamed through validation."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from mlwork.core import DataError
from mlwork.data.batches import quarantine_name
from mlwork.data.contracts import ColumnRule, Contract
from mlwork.data.quarantine import read_batch, validate_into_store
from mlwork.data.store import DatasetStore
from mlwork.data.validation import validate

# `x` above 10 is an outlier (warn): the row is quarantined, the batch is not blocked
CONTRACT = Contract({'id': ColumnRule('id', 'Int64', nullable=False), 'x': ColumnRule('x', 'Float64', min=0, max=100, q_high=10)},
                    name='evo')


def run(batch, store, tmp_path, contract=CONTRACT, **kw):
    return validate_into_store(batch, contract, store, 'd', scratch_root=tmp_path, **kw)


def versions(store, name):
    return store.history(name).height if store.exists(name) else 0


@pytest.mark.parametrize('source', ['frame', 'parquet', 'csv'])
def test_the_wedge_scenario_stores_valid_rows_and_quarantines_the_bad_one(tmp_path, source):
    "A batch with an extra column, then batches without it that have a failing row: each is stored, with nulls."
    store = DatasetStore(str(tmp_path / 'data'))
    batches = [pl.DataFrame({'id': [1, 2, 3], 'x': [1.0, 2.0, 30.0], 'channel': ['web', 'app', 'web']}),
               pl.DataFrame({'id': [4, 5, 6], 'x': [1.0, 20.0, 3.0]}),
               pl.DataFrame({'id': [7, 8], 'x': [50.0, 4.0]}),
               pl.DataFrame({'id': [9, 10], 'x': [5.0, 60.0], 'channel': ['app', 'web']})]
    for i, b in enumerate(batches):
        arg = b
        if source != 'frame':
            arg = tmp_path / f'b{i}.{source}'
            b.write_parquet(arg) if source == 'parquet' else b.write_csv(arg)
        r = run(arg, store, tmp_path)
        assert not r.blocking and (r.valid_rows, r.quarantined_rows) == (b.height - 1, 1), r
        assert (versions(store, 'd'), versions(store, quarantine_name('d'))) == (i + 1, i + 1)
    valid = store.read('d').sort('id')
    assert valid['id'].to_list() == [1, 2, 4, 6, 8, 9]
    assert valid['channel'].to_list() == ['web', 'app', None, None, None, 'app']
    q = store.read(quarantine_name('d')).sort('x')
    assert q['x'].to_list() == ['20.0', '30.0', '50.0', '60.0'] and q['channel'].to_list() == [None, 'web', None, 'web']
    assert all(['x: ' in r[0] and 'above outlier bound 10' in r[0] for r in q['_reasons'].to_list()])


def test_the_wedge_scenario_through_the_cli(tmp_path):
    "The issue's scenario as a user runs it: exit 0 both times, the valid rows stored, the bad row quarantined."
    mlwork = Path(sys.executable).parent / 'mlwork'
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    def cli(*args):
        return subprocess.run([str(mlwork), *args, '--home', str(tmp_path / 'ws')], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert cli('init').returncode == 0
    (tmp_path / 'c.yaml').write_text(CONTRACT.to_yaml())
    pl.DataFrame({'id': [1, 2], 'x': [1.0, 30.0], 'extra': ['a', 'b']}).write_parquet(tmp_path / 'b1.parquet')
    pl.DataFrame({'id': [3, 4], 'x': [1.0, 30.0]}).write_parquet(tmp_path / 'b2.parquet')
    for b in ('b1', 'b2'):
        r = cli('validate', str(tmp_path / f'{b}.parquet'), '--contract', str(tmp_path / 'c.yaml'), '--dataset', 'd')
        assert r.returncode == 0 and '1 valid, 1 quarantined' in r.stdout, (r.stdout, r.stderr)
    store = DatasetStore(str(tmp_path / 'ws' / 'data'))
    assert store.read('d').sort('id').rows() == [(1, 1.0, 'a'), (3, 1.0, None)]
    assert store.read('d__quarantine').height == 2


def test_extra_column_block_severity_blocks_but_never_wedges(tmp_path):
    strict = Contract(CONTRACT.columns, severity={'extra_column': 'block'}, name='strict')
    store = DatasetStore(str(tmp_path / 'data'))
    r = run(pl.DataFrame({'id': [1, 2], 'x': [1.0, 30.0], 'junk': [1, 2]}), store, tmp_path, strict)
    assert r.blocking and r.valid_version is None and r.quarantine_version is not None
    assert store.read(quarantine_name('d'))['junk'].to_list() == ['2']
    r = run(pl.DataFrame({'id': [3, 4], 'x': [1.0, 30.0]}), store, tmp_path, strict)  # without it: stored
    assert not r.blocking and r.valid_version is not None and store.read(quarantine_name('d')).height == 2


def test_a_dataset_grown_by_plain_ingest_takes_later_batches_without_its_column(tmp_path):
    store = DatasetStore(str(tmp_path / 'data'))
    store.ingest('d', pl.DataFrame({'id': [1], 'x': [1.0], 'region': pl.Series(['north'], dtype=pl.Enum(['north', 'south']))}))
    r = run(pl.DataFrame({'id': [2, 3], 'x': [2.0, 40.0]}), store, tmp_path)
    assert not r.blocking and r.valid_rows == 1
    got = store.read('d').sort('id')
    assert got['region'].to_list() == ['north', None] and got.schema['region'] == pl.Enum(['north', 'south'])


def test_an_all_null_extra_column_is_stored_as_the_table_type_or_text(tmp_path):
    store = DatasetStore(str(tmp_path / 'data'))
    run(pl.DataFrame({'id': [1, 2], 'x': [1.0, 2.0], 'n': [None, None]}), store, tmp_path)
    assert store.read('d').schema['n'] == pl.String
    store.ingest('e', pl.DataFrame({'id': [1], 'x': [1.0], 'n': [1.5]}))
    validate_into_store(pl.DataFrame({'id': [2], 'x': [2.0], 'n': [None]}), CONTRACT, store, 'e', scratch_root=tmp_path)
    assert store.read('e').schema['n'] == pl.Float64 and store.read('e').height == 2


@pytest.mark.parametrize('batch, says', [
    (pl.DataFrame({'id': [1], 'x': [1.0], 'Note': ['a'], 'note': ['b']}), 'has columns `Note` and `note`, whose names differ only in case'),
    (pl.DataFrame({'ID': [1], 'x': [1.0]}), "column `ID` of the batch differs only in case from the contract's column `id`"),
    (pl.DataFrame({'id': [1], 'x': [1.0], 'CHANNEL': ['a']}), "column `CHANNEL` of the batch differs only in case from dataset `d`'s column `channel`"),
    (pl.DataFrame({'id': [1], 'x': [1.0], 'channel': [7]}), 'type change refused for dataset `d`: column `channel` must be String (found Int64)'),
])
def test_what_cannot_be_stored_is_refused_before_anything_is_written(tmp_path, batch, says):
    store = DatasetStore(str(tmp_path / 'data'))
    run(pl.DataFrame({'id': [0, 5], 'x': [1.0, 50.0], 'channel': ['web', 'app']}), store, tmp_path)
    with pytest.raises(DataError, match=None) as e:
        run(batch, store, tmp_path)
    assert says in str(e.value)
    assert (versions(store, 'd'), versions(store, quarantine_name('d'))) == (1, 1)
    if 'Note' in batch.columns or 'ID' in batch.columns:  # the same refusal without a store
        with pytest.raises(DataError, match='differ'):
            validate(batch, CONTRACT)


def test_empty_batches_are_refused_by_both_paths(tmp_path):
    store = DatasetStore(str(tmp_path / 'data'))
    for frame, says in ((pl.DataFrame(schema={'id': pl.Int64, 'x': pl.Float64}), 'has no rows'), (pl.DataFrame(), 'has no columns')):
        path = tmp_path / 'e.parquet'
        frame.write_parquet(path)
        for call in (lambda: run(path, store, tmp_path), lambda: read_batch(path, CONTRACT, scratch_root=tmp_path)):
            with pytest.raises(DataError, match=says):
                call()
    assert not store.exists('d') and not store.exists(quarantine_name('d'))


KILL = textwrap.dedent('''
    import os, signal, sys, polars as pl
    import mlwork.data.quarantine as q
    from mlwork.data.contracts import Contract, ColumnRule
    from mlwork.data.store import DatasetStore
    root, path = sys.argv[1], sys.argv[2]
    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)   # every chunk spilled, nothing committed yet
    q._fingerprint = killed
    c = Contract({'id': ColumnRule('id', 'Int64'), 'x': ColumnRule('x', 'Float64', q_high=10)})
    q.validate_into_store(path, c, DatasetStore(root + '/data'), 'd', chunk_rows=20_000, scratch_root=root)
''')


def test_a_killed_run_leaves_a_spill_folder_that_the_next_run_removes(tmp_path):
    path = tmp_path / 'big.csv'
    n = 100_000
    pl.DataFrame({'id': pl.int_range(n, eager=True), 'x': (pl.int_range(n, eager=True) % 20).cast(pl.Float64)}).write_csv(path)
    p = subprocess.run([sys.executable, '-c', KILL, str(tmp_path), str(path)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = list((tmp_path / 'tmp').glob('spill-*'))
    assert len(left) == 1 and sum(f.stat().st_size for f in left[0].iterdir()) > 100_000  # the CSV copy and the chunks
    store = DatasetStore(str(tmp_path / 'data'))
    assert not store.exists('d')
    r = validate_into_store(path, CONTRACT, store, 'd', chunk_rows=20_000, scratch_root=tmp_path)
    assert r.valid_rows + r.quarantined_rows == n and r.quarantined_rows == n * 9 // 20
    assert list((tmp_path / 'tmp').iterdir()) == []


def test_quarantine_and_spill_files_are_private_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        store = DatasetStore(str(tmp_path / 'data'))
        seen = []
        real = DatasetStore.append_files
        def spy(self, name, files, **kw):
            seen.extend(Path(f) for f in files)
            seen.append(Path(files[0]).parent)
            assert all(stat.S_IMODE(Path(f).stat().st_mode) & 0o077 == 0 for f in seen)
            return real(self, name, files, **kw)
        DatasetStore.append_files = spy
        try:
            run(pl.DataFrame({'id': [1, 2], 'x': [1.0, 50.0]}), store, tmp_path)
        finally:
            DatasetStore.append_files = real
        assert seen
        written = [f for f in (tmp_path / 'data' / quarantine_name('d')).rglob('*') if f.is_file()]
        assert written and all(stat.S_IMODE(f.stat().st_mode) & 0o077 == 0 for f in written), \
            [(f.name, oct(f.stat().st_mode)) for f in written]
    finally:
        os.umask(old)


def test_a_csv_is_streamed_and_typed_as_a_fully_read_csv_would_be(tmp_path):
    "Contract columns typed where every value converts; a bad value late in the file is quarantined, not an error."
    n = 30_000
    ids = [str(i) for i in range(n)]
    xs = [f'{i % 7}.5' for i in range(n)]
    xs[-1] = 'oops'
    path = tmp_path / 'b.csv'
    pl.DataFrame({'id': ids, 'x': xs, 'flag': ['true'] * n, 'when': ['2024-01-02'] * n}).write_csv(path)
    frame = read_batch(path, CONTRACT, scratch_root=tmp_path)
    assert frame.schema == pl.Schema({'id': pl.Int64, 'x': pl.String, 'flag': pl.Boolean, 'when': pl.Date})
    whole = pl.read_csv(path, infer_schema_length=None, try_parse_dates=True)
    assert frame.schema == whole.schema and frame.equals(whole)
    store = DatasetStore(str(tmp_path / 'data'))
    r = run(path, store, tmp_path, chunk_rows=7_000)
    rep = validate(whole, CONTRACT)
    assert (r.valid_rows, r.quarantined_rows, r.blocking) == (rep.valid.height, rep.quarantine.height, rep.blocking)
    assert store.read(quarantine_name('d')).filter(pl.col('x') == 'oops')['_reasons'].to_list() == [["x: 'oops' is not a Float64"]]
