"Tests for mlwork.data.quarantine: equality with `validate` on the whole batch, one commit per table, bounded memory."
import json
import subprocess
import sys
import tempfile
import textwrap

import polars as pl
import pytest

from mlwork.data.quarantine import validate_into_store
from mlwork.data.batches import content_hash, quarantine_name
from mlwork.data.store import DatasetStore
from mlwork.synthetic import generate
from mlwork.data.contracts import infer_contract
from mlwork.data.validation import validate


@pytest.fixture(scope='module')
def contract():
    ref = generate('credit', n_rows=5000, seed=1, missing=0.02)
    return infer_contract(ref.frame, key='id', time_column='timestamp', max_age='2d', name='credit')


def _with_dups(frame, every):
    "Give every `every`-th row the id of row 3, so duplicates span chunks."
    return frame.with_columns(pl.when(pl.int_range(pl.len()) % every == 7).then(pl.lit(frame['id'][3])).otherwise(pl.col('id')).alias('id'))


@pytest.mark.parametrize('n,seed,dups,source', [(10_000, 0, 0, 'frame'), (30_000, 1, 4_999, 'frame'), (60_000, 2, 9_001, 'parquet')])
def test_matches_validate(contract, tmp_path, n, seed, dups, source):
    frame = generate('credit', n_rows=n, seed=seed, corrupt=0.02, outliers=0.01, missing=0.02).frame
    if dups:
        frame = _with_dups(frame, dups)
    now = frame['timestamp'].max()
    rep = validate(frame, contract, now=now, max_reasons=None)
    batch = frame
    if source == 'parquet':
        batch = tmp_path / 'b.parquet'
        frame.write_parquet(batch, row_group_size=5000)
    store = DatasetStore(str(tmp_path / 'store'))
    run = validate_into_store(batch, contract, store, 'credit', chunk_rows=7_000, now=now, max_reasons=None)
    assert run.chunks == -(-n // 7_000)
    assert (run.valid_rows, run.quarantined_rows, run.blocking) == (rep.valid.height, rep.quarantine.height, rep.blocking)
    assert run.checks.drop('detail').equals(rep.checks.drop('detail'))
    q = store.read(quarantine_name('credit')).sort('_row')
    assert q['_row'].to_list() == rep.quarantine['_row'].to_list()
    want = rep.quarantine.sort('_row')
    assert [sorted(r) for r in q['_reasons'].to_list()] == [sorted(r) for r in want['_reasons'].to_list()]
    hist = store.history(quarantine_name('credit'))
    assert hist.height == 1 and hist['rows'][0] == rep.quarantine.height
    assert hist['content_hash'][0] == content_hash(want)  # store's hash of the batch in row order
    if dups:
        assert run.checks.filter(pl.col('check') == 'duplicate_key')['failed_rows'][0] == len(range(7, n, dups)) + 1


def test_not_blocked_writes_valid_once(contract, tmp_path):
    frame = generate('credit', n_rows=20_000, seed=3, missing=0.01).frame  # clean
    now = frame['timestamp'].max()
    store = DatasetStore(str(tmp_path / 'store'))
    rep = validate(frame, contract, now=now)
    run = validate_into_store(frame, contract, store, 'credit', chunk_rows=3_000, now=now, message='m')
    assert not rep.blocking and not run.blocking
    hist = store.history('credit')
    assert hist.height == 1 and hist['rows'][0] == rep.valid.height and hist['message'][0] == 'm'
    got = store.read('credit')
    assert hist['content_hash'][0] == content_hash(rep.valid)
    assert got.height == rep.valid.height and run.valid_version.version == 0


def test_blocked_writes_quarantine_only(contract, tmp_path):
    frame = _with_dups(generate('credit', n_rows=9_000, seed=4).frame, 2_000)
    store = DatasetStore(str(tmp_path / 'store'))
    run = validate_into_store(frame, contract, store, 'credit', chunk_rows=2_500, now=frame['timestamp'].max())
    assert run.blocking and run.valid_version is None and not store.exists('credit')
    rep = validate(frame, contract, now=frame['timestamp'].max())
    assert run.quarantined_rows == rep.quarantine.height == store.read(quarantine_name('credit')).height
    assert 'QuarantineRun' in run._repr_html_() and json.dumps(run.to_dict(), default=str)


MEM_SCRIPT = textwrap.dedent('''
    import sys, threading, time, psutil, polars as pl, tempfile
    from mlwork.data.quarantine import validate_into_store
    from mlwork.data.store import DatasetStore
    from mlwork.data.contracts import Contract, ColumnRule
    n, chunk, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    pl.DataFrame({'id': pl.int_range(n, eager=True), 'x': pl.int_range(n, eager=True).cast(pl.Float64) + 1e6,
                  's': pl.int_range(n, eager=True).cast(pl.String)}).write_parquet(path, row_group_size=50_000)
    c = Contract({'id': ColumnRule('id', 'Int64'), 'x': ColumnRule('x', 'Float64', max=10.0),
                  's': ColumnRule('s', 'String', allowed=['a'])}, key=['id'])
    proc = psutil.Process(); base = proc.memory_info().rss; peak = [base]; stop = []
    def watch():
        while not stop:
            peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.01)
    t = threading.Thread(target=watch); t.start()
    run = validate_into_store(path, c, DatasetStore(tempfile.mkdtemp()), 'd', chunk_rows=chunk)
    stop.append(1); t.join()
    assert run.quarantined_rows == n
    print((peak[0] - base) / 2**20)
''')


def peak_extra_mib(n, chunk, tmp_path):
    out = subprocess.run([sys.executable, '-c', MEM_SCRIPT, str(n), str(chunk), str(tmp_path / f'b{n}.parquet')],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_memory_bounded_by_chunk(tmp_path):
    # 500k rows, every row failing two checks: `validate` on the whole batch takes ~12x its Arrow size
    extra = peak_extra_mib(500_000, 100_000, tmp_path)
    assert extra < 400, f'peak extra RSS {extra:.0f} MiB'


def test_rerun_after_a_crash_between_the_two_commits_stores_the_batch_exactly_once(contract, tmp_path, monkeypatch):
    frame = generate('credit', n_rows=12_000, seed=3, missing=0.01).frame  # not blocking, with rows to quarantine
    now = frame['timestamp'].max()
    store = DatasetStore(str(tmp_path / 'store'))
    earlier = generate('credit', n_rows=3_000, seed=3, missing=0.01).frame
    first = validate_into_store(earlier, contract, store, 'credit', now=earlier['timestamp'].max())
    assert not first.blocking and first.reused == [] and first.quarantined_rows > 0
    real = DatasetStore.append_files
    def crash(store_, name, files, **kw):
        if name == 'credit':
            raise OSError('killed between the two commits')
        return real(store_, name, files, **kw)
    monkeypatch.setattr(DatasetStore, 'append_files', crash)
    with pytest.raises(OSError, match='between the two commits'):
        validate_into_store(frame, contract, store, 'credit', chunk_rows=5_000, now=now)
    monkeypatch.undo()
    assert store.history(quarantine_name('credit')).height == 2 and store.history('credit').height == 1  # the valid rows are missing
    resumed = validate_into_store(frame, contract, store, 'credit', chunk_rows=5_000, now=now)
    assert resumed.reused == [f'{quarantine_name("credit")}@1'] and resumed.valid_version.version == 1
    assert store.history(quarantine_name('credit')).height == 2        # the quarantine was not appended again
    rep = validate(frame, contract, now=now)
    assert not rep.blocking and rep.quarantine.height > 0
    assert store.read('credit', version=1).height - store.read('credit', version=0).height == rep.valid.height
    again = validate_into_store(frame, contract, store, 'credit', chunk_rows=5_000, now=now)   # a retried load: nothing new
    assert sorted(again.reused) == sorted([f'{quarantine_name("credit")}@1', 'credit@1'])
    assert (store.history('credit').height, store.history(quarantine_name('credit')).height) == (2, 2)
    assert again.to_dict()['reused'] == again.reused
    other = validate_into_store(frame.head(11_000), contract, store, 'credit', chunk_rows=5_000, now=now)  # another batch
    assert other.reused == [] and store.history('credit').height == 3


def test_text_and_json_carry_the_same_facts(contract, tmp_path):
    "Every failed check and every version `str(run)` names is in `run.to_dict()`."
    from mlwork.checks import check_result
    frame = _with_dups(generate('credit', n_rows=6_000, seed=5, corrupt=0.02).frame, 1_000)
    store = DatasetStore(str(tmp_path / 'store'))
    run = validate_into_store(frame, contract, store, 'credit', chunk_rows=2_000, now=frame['timestamp'].max())
    check_result(run)
    text, d = str(run), json.loads(json.dumps(run.to_dict(), default=str))
    lines = text.splitlines()
    assert lines[0].startswith("dataset 'credit', contract 'credit': 6,000 rows") and d['verdict'] == 'blocked'
    assert len(d['failed']) == run.failed.height > 0
    for c in d['failed']:
        row = [ln for ln in lines if ln.split()[:2] == [c['severity'], c['check']] and (c['column'] or '') in ln]
        assert row and (c['failed_rows'] is None or f" {c['failed_rows']:>9}  " in row[0])
    dup = [c for c in d['failed'] if c['check'] == 'duplicate_key'][0]
    assert dup['failed_rows'] == len(range(7, 6_000, 1_000)) + 1
    assert f"quarantined rows kept in {d['quarantine_version']}" in text and d['valid_version'] is None
    assert 'blocked: valid rows NOT stored in credit' in text
