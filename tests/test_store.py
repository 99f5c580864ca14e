"""The versioned dataset store: the issue's scenario, atomicity under faults and kills, concurrent writers
in real processes, bad inputs, schema evolution and lineage.

Every test that makes something fail checks afterwards that the table still reads at its previous version
with the same content hash: nothing already stored may be lost or corrupted.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import mlwork.data.store as store_mod
from mlwork.core import ConflictError, DataError, InvalidParameter, NotFound
from mlwork.data.batches import DatasetRef, content_hash, parse_ref
from mlwork.data.store import DatasetStore, DatasetVersion, history_html
from mlwork.synthetic import generate

PY = sys.executable


def credit(seed: int, n: int = 300) -> pl.DataFrame:
    return generate('credit', n_rows=n, seed=seed).frame


def snapshot(store: DatasetStore, name: str) -> tuple[int, str, int]:
    "Version, content hash of the current content (rows sorted, so order-independent) and row count."
    frame = store.read(name)
    return store.version(name), content_hash(frame.sort(frame.columns)), frame.height


def run_py(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, '-c', textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    return DatasetStore(tmp_path / 'data')


# --- the "done when" scenario ----------------------------------------------------------------

def test_three_batches_history_time_travel_and_stable_hash(store, tmp_path):
    batches = [credit(seed) for seed in (11, 12, 13)]
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=1)
    versions = [store.ingest('credit', b, user=f'user{i}', message=f'month {i + 1}') for i, b in enumerate(batches)]
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)

    assert [v.version for v in versions] == [0, 1, 2]
    assert all(isinstance(v, DatasetVersion) for v in versions)
    h = store.history('credit')
    assert h.height == 3 and h['version'].to_list() == [2, 1, 0]           # newest first
    assert h['user'].to_list() == ['user2', 'user1', 'user0']              # who
    assert h['message'].to_list() == ['month 3', 'month 2', 'month 1']     # what
    assert h['operation'].to_list() == ['append'] * 3
    assert h['rows'].to_list() == [300, 300, 300]
    assert all(before <= t <= after for t in h['timestamp'].to_list())     # when
    assert h['timestamp'].is_sorted(descending=True)

    # travel back: version 0 is exactly batch 0, types included (Enum, Int8, Datetime)
    v0 = store.read('credit', version=0)
    assert v0.schema == batches[0].schema
    assert v0.equals(batches[0])
    assert store.read('credit@1').height == 600 and store.read('credit').height == 900
    # ... and by time: at version 1's commit time, the table had two batches
    assert store.read('credit', as_of=versions[1].timestamp).height == 600

    # content hash: recorded = recomputed from what reads back = computed in a fresh process
    recorded = h.sort('version')['content_hash'].to_list()
    assert recorded == [content_hash(b) for b in batches]
    assert content_hash(v0) == recorded[0]
    assert len(set(recorded)) == 3
    code = """
        import sys
        from mlwork.data.batches import content_hash
        from mlwork.data.store import DatasetStore
        from mlwork.synthetic import generate
        fresh = DatasetStore(sys.argv[1])
        print(fresh.ingest('again', generate('credit', n_rows=300, seed=11).frame).content_hash)
        print(content_hash(DatasetStore(sys.argv[2]).read('credit', version=0)))
    """
    p = run_py(code, str(tmp_path / 'other'), store.uri)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [recorded[0], recorded[0]]

    # the renderings
    assert 'credit@0' in versions[0]._repr_html_() and versions[0].to_dict()['content_hash'] == recorded[0]
    page = history_html(h, name='credit')
    assert 'month 3' in page and recorded[2][:12] in page and 'history of credit' in page


def test_files_are_ingested_with_their_source(store, tmp_path):
    b = credit(5, 100).with_columns(pl.col(pl.Enum).cast(pl.String))
    b.write_parquet(tmp_path / 'b.parquet')
    b.write_csv(tmp_path / 'b.csv')
    v0 = store.ingest('from-files', tmp_path / 'b.parquet')
    v1 = store.ingest('from-files', str(tmp_path / 'b.csv'))
    assert (v0.source, v1.source) == (str(tmp_path / 'b.parquet'), str(tmp_path / 'b.csv'))
    assert v0.content_hash == v1.content_hash == content_hash(b)          # CSV types (dates too) infer back
    assert store.history('from-files')['source'].to_list() == [v1.source, v0.source]


# --- atomicity -----------------------------------------------------------------------------------------

def test_a_batch_failing_mid_write_leaves_the_previous_version(store, monkeypatch, tmp_path):
    store.ingest('credit', credit(1))
    store.ingest('credit', credit(2))
    before = snapshot(store, 'credit')

    def failing_stream(frame: pl.DataFrame):
        table = frame.to_arrow()
        def batches():
            for i, rb in enumerate(table.to_batches(max_chunksize=1000)):
                if i == 3:
                    raise RuntimeError('source went away after 3,000 rows')
                yield rb
        return pa.RecordBatchReader.from_batches(table.schema, batches())

    monkeypatch.setattr(store_mod, '_arrow_stream', failing_stream)
    with pytest.raises(DataError, match='Nothing was stored by this call') as e:
        store.ingest('credit', credit(3, 10_000))
    assert 'source went away' in str(e.value)
    assert snapshot(store, 'credit') == before
    assert store.history('credit').height == 2
    # some data files of the failed batch may be on disk, but none is part of the table
    monkeypatch.undo()
    v = store.ingest('credit', credit(4))
    assert v.version == 2 and store.read('credit').height == 900


def test_a_process_killed_while_writing_leaves_the_previous_version(store):
    store.ingest('big', pl.DataFrame({'a': [1, 2, 3], 'x': [0.1, 0.2, 0.3]}))
    before = snapshot(store, 'big')
    table_dir = Path(store.table_uri('big'))
    files_before = {p.name for p in table_dir.iterdir()}
    # The child writes 2,000,000 rows as a stream of 200 slow record batches (about 4 s), so the kill
    # lands mid-write for certain; it prints 'writing' just before the write starts.
    code = """
        import sys, time
        import numpy as np, polars as pl, pyarrow as pa
        import mlwork.data.store as sm
        def slow(frame):
            table = frame.to_arrow()
            def gen():
                for rb in table.to_batches(max_chunksize=10_000):
                    time.sleep(0.02)
                    yield rb
            print('writing', flush=True)
            return pa.RecordBatchReader.from_batches(table.schema, gen())
        sm._arrow_stream = slow
        n = 2_000_000
        f = pl.DataFrame({'a': np.arange(n), 'x': np.random.default_rng(0).random(n)})
        sm.DatasetStore(sys.argv[1]).ingest('big', f)
        print('committed', flush=True)
    """
    proc = subprocess.Popen([PY, '-c', textwrap.dedent(code), store.uri], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'writing'
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert 'committed' not in proc.stdout.read()
    assert snapshot(store, 'big') == before
    assert DatasetStore(f'file://{store.uri}').read('big', version=0).equals(pl.DataFrame({'a': [1, 2, 3], 'x': [0.1, 0.2, 0.3]}))
    assert not (table_dir / '_delta_log' / f'{1:020d}.json').exists()
    leftovers = {p.name for p in table_dir.iterdir()} - files_before
    # the table is still writable after the kill
    assert store.ingest('big', pl.DataFrame({'a': [4], 'x': [0.4]})).version == 1
    assert store.read('big').height == 4
    print(f'files left by the killed writer (not part of the table): {sorted(leftovers)}')


# --- concurrency -----------------------------------------------------------------------------------------

WORKER = """
    import json, sys, time
    from pathlib import Path
    from mlwork.core import ConflictError
    from mlwork.data.store import DatasetStore
    from mlwork.synthetic import generate
    uri, worker, rounds, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    modes = sys.argv[5].split(',')
    store = DatasetStore(uri)
    while not go.exists():
        time.sleep(0.005)
    for r in range(rounds):
        frame = generate('credit', n_rows=50 + 10 * worker + r, seed=1000 * worker + r).frame
        mode = modes[r % len(modes)]
        try:
            v = store.ingest('shared', frame, mode=mode, user=f'w{worker}', message=f'w{worker} r{r}')
            out = {'ok': True, 'version': v.version, 'hash': v.content_hash, 'rows': v.rows, 'mode': mode}
        except ConflictError as e:
            out = {'ok': False, 'conflict': str(e), 'mode': mode}
        print(json.dumps(out), flush=True)
"""


def run_writers(store: DatasetStore, tmp_path: Path, modes_per_worker: list[str], rounds: int) -> list[dict]:
    go = tmp_path / 'go'
    procs = [subprocess.Popen([PY, '-c', textwrap.dedent(WORKER), store.uri, str(w), str(rounds), str(go), modes],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w, modes in enumerate(modes_per_worker)]
    time.sleep(1.5)  # let them all import and wait at the gate
    go.touch()
    results = []
    for w, p in enumerate(procs):
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f'worker {w} crashed (only ConflictError is acceptable):\n{err}'
        results += [{**json.loads(line), 'worker': w} for line in out.splitlines()]
    assert len(results) == rounds * len(procs)
    return results


def check_consistent(store: DatasetStore, results: list[dict]) -> None:
    "Every committed version reads, and its row count follows from the batches committed before it."
    ok = sorted((r for r in results if r['ok']), key=lambda r: r['version'])
    assert [r['version'] for r in ok] == list(range(len(ok)))          # one version per success, no gaps
    assert store.version('shared') == len(ok) - 1
    h = store.history('shared').sort('version')
    assert h['content_hash'].to_list() == [r['hash'] for r in ok]       # each version is the worker's batch
    expected = 0
    for r in ok:
        expected = r['rows'] if r['mode'] == 'overwrite' else expected + r['rows']
        frame = store.read('shared', version=r['version'])
        assert frame.height == expected, f"version {r['version']}"
    for r in results:
        if not r['ok']:
            assert 'Retry the ingest' in r['conflict']


def test_concurrent_appends_all_commit(store, tmp_path):
    # three processes race to create the table, then keep appending: every append must land
    results = run_writers(store, tmp_path, ['append'] * 3, rounds=4)
    check_consistent(store, results)
    assert all(r['ok'] for r in results), [r for r in results if not r['ok']]
    assert store.read('shared').height == sum(r['rows'] for r in results)


def test_concurrent_overwrite_and_appends_never_corrupt(store, tmp_path):
    store.ingest('shared', credit(0, 40), user='setup')
    results = run_writers(store, tmp_path, ['append', 'overwrite,append', 'append'], rounds=4)
    results.append({'ok': True, 'version': 0, 'hash': content_hash(credit(0, 40)), 'rows': 40, 'mode': 'append', 'worker': -1})
    check_consistent(store, results)
    conflicts = [r for r in results if not r['ok']]
    print(f'{len(conflicts)} of {len(results) - 1} writes got ConflictError')


# --- bad input: a clear error each, nothing stored lost ----------------------------------------------------

@pytest.fixture
def filled(store) -> tuple[DatasetStore, tuple]:
    store.ingest('credit', credit(1, 100))
    store.ingest('credit', credit(2, 100))
    return store, snapshot(store, 'credit')


def test_bad_inputs_are_refused_and_nothing_is_lost(filled, tmp_path):
    store, before = filled
    good = credit(3, 50)
    csv_dir = tmp_path / 'in'
    csv_dir.mkdir()
    (csv_dir / 'dup.csv').write_text('id,age,id\n1,30,2\n')
    (csv_dir / 'noname.csv').write_text('id,,age\n1,2,30\n')
    (csv_dir / 'latin1.csv').write_bytes('id,name\n1,Jos\xe9\n'.encode('latin-1'))
    (csv_dir / 'latin1_header.csv').write_bytes('id,r\xe9gion\n1,x\n'.encode('latin-1'))
    (csv_dir / 'empty.csv').write_text('')
    good.write_parquet(csv_dir / 'good.parquet')
    raw = (csv_dir / 'good.parquet').read_bytes()
    (csv_dir / 'cut.parquet').write_bytes(raw[: len(raw) // 2])
    (csv_dir / 'garbage.parquet').write_bytes(b'not parquet at all' * 100)
    (csv_dir / 'data.json').write_text('{}')

    cases = [
        (good.clear(), DataError, 'has no rows; an empty batch is refused'),
        (pl.DataFrame(), DataError, 'has no columns'),
        (good.with_columns(pl.lit(None).alias('notes')), DataError, 'new column `notes` is all null (type Null)'),
        (csv_dir / 'dup.csv', DataError, 'duplicated column names: `id`'),
        (csv_dir / 'noname.csv', DataError, 'empty column name at position 1'),
        (good.rename({'age': ''}), DataError, 'empty column name'),
        (csv_dir / 'latin1.csv', DataError, 'is not valid UTF-8 text'),
        (csv_dir / 'latin1_header.csv', DataError, r"is not UTF-8 text (byte 4 of its header is b'\xe9')"),
        (csv_dir / 'empty.csv', DataError, 'is empty: expected a header line'),
        (csv_dir / 'cut.parquet', DataError, 'is not a readable Parquet file (truncated or corrupt?)'),
        (csv_dir / 'garbage.parquet', DataError, 'is not a readable Parquet file'),
        (csv_dir / 'missing.parquet', NotFound, 'no file at'),
        (csv_dir / 'data.json', DataError, "is not a .parquet or .csv file (suffix '.json'); expected a .parquet or .csv file to ingest."),
        ({'id': [1]}, InvalidParameter, "The 'data' parameter of DatasetStore.ingest must be"),
        (good.with_columns(pl.col('income').cast(pl.String)), DataError,
         'column `income` must be Float64 (found String)'),
        (good.drop('age'), DataError, 'the batch lacks column `age`'),
        (good.rename({'age': 'age_years'}), DataError, 'lacks column `age` of dataset `credit` and adds `age_years` (a rename?)'),
        (good.with_columns(wait=pl.lit(dt.timedelta(1))), DataError, 'column `wait` has type Duration'),
    ]
    for data, error, text in cases:
        with pytest.raises(error) as e:
            store.ingest('credit', data)
        assert text in str(e.value), (data if isinstance(data, Path) else text, str(e.value))
        assert snapshot(store, 'credit') == before

    for name in ['../x', '', 'A/B', 'a/../../b', '/abs', 'x' * 129]:
        with pytest.raises(InvalidParameter, match="The 'name' parameter must be a dataset name"):
            store.ingest(name, good)
    assert not (Path(store.uri).parent / 'x').exists() and store.list() == ['credit']

    with pytest.raises(NotFound, match=r'Dataset `credit` has no version 5: versions 0 to 1 exist\.'):
        store.read('credit', version=5)
    with pytest.raises(NotFound, match='Dataset `credit` has no version 9'):
        store.read('credit@9')
    with pytest.raises(NotFound, match=r'did not exist at 1999-12-31T23:00:00\+00:00: its first version \(0\) was committed at'):
        store.read('credit', as_of='2000-01-01T00:00:00+01:00')
    with pytest.raises(InvalidParameter, match="'as_of' parameter must be an ISO 8601"):
        store.read('credit', as_of='last tuesday')
    with pytest.raises(NotFound, match='No dataset `debit`.* Datasets here: credit'):
        store.read('debit')
    with pytest.raises(InvalidParameter, match="'mode' parameter of DatasetStore.ingest must be one of 'append', 'overwrite'"):
        store.ingest('credit', good, mode='upsert')
    assert snapshot(store, 'credit') == before


def test_null_column_takes_the_table_type(filled):
    store, before = filled
    batch = credit(4, 20).with_columns(pl.lit(None).alias('income'))     # all-null batch column: Null dtype
    v = store.ingest('credit', batch)
    back = store.read('credit', version=v.version)
    assert back.schema['income'] == pl.Float64 and back['income'].null_count() == 20


# --- schema evolution -----------------------------------------------------------------------------------

def test_schema_evolution(store):
    base = credit(1, 100)
    store.ingest('credit', base)
    # additive: a new column is added; old rows read null; the old version keeps its schema
    v1 = store.ingest('credit', credit(2, 100).with_columns(score=pl.lit(0.7)), message='adds score')
    assert v1.added_columns == ('score',) and 'score' in v1.columns
    now = store.read('credit')
    assert now['score'].null_count() == 100 and now['score'].drop_nulls().to_list() == [0.7] * 100
    assert store.read('credit', version=0).equals(base)
    # lossless conversions are applied: Int32 into Int64, Int64 into Float64
    v2 = store.ingest('credit', credit(3, 10).with_columns(pl.col('age').cast(pl.Int32), pl.col('income').round(0).cast(pl.Int64),
                                                            score=pl.lit(1)))
    assert store.read('credit', version=v2.version).schema == now.schema
    before = snapshot(store, 'credit')
    # type changes are refused, naming the column, the expected and the found type
    with pytest.raises(DataError, match=r'column `age` must be Int64 \(found Float64\); column `score` must be Float64 \(found String\)'):
        store.ingest('credit', credit(4, 10).with_columns(pl.col('age').cast(pl.Float64), score=pl.lit('high')))
    with pytest.raises(DataError, match='column `timestamp` must be'):
        store.ingest('credit', credit(4, 10).with_columns(pl.col('timestamp').dt.replace_time_zone('UTC'), score=pl.lit(1.0)))
    with pytest.raises(DataError, match='does not fit the type'):
        store.ingest('credit', credit(4, 10).with_columns(pl.col('repaid').cast(pl.Int64) * 1000, score=pl.lit(1.0)))
    # strict: any change of columns is refused
    with pytest.raises(DataError, match="schema_policy='strict' refuses new column `extra`"):
        store.ingest('credit', credit(4, 10).with_columns(score=pl.lit(1.0), extra=pl.lit(1)), schema_policy='strict')
    assert snapshot(store, 'credit') == before
    # strict accepts a batch with the same columns in any order
    batch = credit(5, 10).with_columns(score=pl.lit(0.1))
    store.ingest('credit', batch.select(reversed(batch.columns)), schema_policy='strict')
    assert store.version('credit') == before[0] + 1


def test_enum_categories_grow_across_batches(store):
    a = pl.DataFrame({'k': pl.Series(['x', 'y'], dtype=pl.Enum(['x', 'y']))})
    b = pl.DataFrame({'k': pl.Series(['z'], dtype=pl.Enum(['y', 'z']))})
    store.ingest('cats', a)
    store.ingest('cats', b)
    assert store.read('cats').schema['k'] == pl.Enum(['x', 'y', 'z'])
    assert store.read('cats', version=0).schema['k'] == pl.Enum(['x', 'y'])
    store.ingest('cats', pl.DataFrame({'k': ['free text']}))             # a plain string batch: reads as String from now
    assert store.read('cats').schema['k'] == pl.String


# --- lineage ---------------------------------------------------------------------------------------------

def test_lineage_links_exact_versions(store):
    store.ingest('raw', credit(1, 100))
    store.ingest('raw', credit(2, 100))
    clean = store.read('raw').filter(pl.col('age') >= 18)
    store.ingest('clean', clean)
    rec = store.record_lineage(DatasetRef('clean'), ['raw'], kind='derive', details={'filter': 'age >= 18'})
    assert rec['output'] == 'clean@0' and rec['inputs'] == ['raw@1']      # unversioned refs pinned at record time
    store.ingest('raw', credit(3, 100))
    assert store.lineage('clean')[0]['inputs'] == ['raw@1']               # still the exact version used
    store.record_lineage('credit-model@2', ['clean@0', parse_ref('raw@2')], kind='train', details={'seed': 7})
    assert [r['kind'] for r in store.lineage('credit-model', 2)] == ['train']
    assert store.lineage('credit-model@1') == []
    with pytest.raises(NotFound, match='no version 7'):
        store.record_lineage('clean', ['raw@7'], kind='derive')
    with pytest.raises(NotFound, match='no dataset `absent`'):
        store.record_lineage('clean', ['absent'], kind='derive')
    with pytest.raises(InvalidParameter, match="'details' parameter"):
        store.record_lineage('clean', ['raw'], kind='derive', details={'f': object()})
    assert len(store.lineage('clean')) == 1 and store.list() == ['clean', 'raw']


def test_store_from_workspace(tmp_path):
    from mlwork.core import init_workspace
    ws = init_workspace(tmp_path / 'ws').workspace
    st = DatasetStore.from_workspace(ws)
    assert st.uri == ws.uri('data') and st.list() == []
    st.ingest('credit', credit(1, 10))
    assert DatasetStore(tmp_path / 'ws' / 'data').list() == ['credit']


def test_a_csv_timestamp_column_parsed_by_arrow_stores_what_polars_parses(tmp_path):
    "Naive ISO timestamps (either separator, 0-6 fractional digits, nulls) across several reader chunks: the stored rows and their content hash are those of polars' own parse."
    n = 60_000
    forms = ['2024-01-31T12:00:00', '2024-02-29 23:59:59.5', '1999-12-31T00:00:00.000001', None, '2024-03-01 08:30:00.123456']
    frame = pl.DataFrame({'id': range(n), 't': [forms[i % len(forms)] for i in range(n)], 'x': [i / 7 for i in range(n)]})
    path = tmp_path / 'ts.csv'
    frame.write_csv(path)
    expected = pl.read_csv(path, schema_overrides={'t': pl.Datetime('us')})  # polars' own datetime parser: the oracle
    store = DatasetStore(str(tmp_path / 'data'))
    v = store.ingest('ts', path)
    assert v.content_hash == content_hash(expected)
    assert store.read('ts').sort('id').equals(expected)


def test_content_hash_equals_the_earlier_releases():
    "Stored hashes are batch fingerprints: a faster hash must give the same value (computed by the release before 859a085)."
    import numpy as np
    from mlwork.data.batches import content_hash
    rng = np.random.default_rng(7)
    n = 50_000  # past the block and the first rows tried for distinct strings; columns for both paths
    f = pl.DataFrame({
        'small_int': rng.integers(-3, 40, n), 'big_int': rng.integers(-2**62, 2**62, n),
        'flag': rng.integers(0, 2, n).astype(bool), 'x': rng.normal(size=n),
        'city': pl.Series(['Lyon', 'Oslo', 'Porto', ''])[rng.integers(0, 4, n)],
        'email': [f'u{i}@x.org' for i in rng.integers(0, n, n)],
        'day': pl.Series(rng.integers(0, 365, n)).cast(pl.Date),
        'ts': pl.Series(rng.integers(0, 10**12, n)).cast(pl.Datetime('us')),
    }).with_columns(pl.when(pl.int_range(n) % 11 == 0).then(None).otherwise(pl.col('city')).alias('city'),
                    pl.when(pl.int_range(n) % 13 == 0).then(None).otherwise(pl.col('small_int')).alias('small_int'))
    assert content_hash(f) == 'b2c85e60d194422650381ee61c80338893287ba176a12ad0a37d08ddf7d5a415'
    assert content_hash(pl.concat([f.slice(30_000), f.slice(0, 30_000)], rechunk=False)) == content_hash(f)  # chunks, order
