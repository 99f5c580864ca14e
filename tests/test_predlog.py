"""The prediction log with real processes: kill -9 mid-stream, concurrent writers, a kill between the Delta commit
and the WAL delete, PII before disk, schema merge, feedback, bad input."""
from __future__ import annotations

import asyncio
import json
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

from mlwork.core import DataError, InvalidParameter, init_workspace, open_workspace
from mlwork.serve.predlog import (PREDICTION_COLUMNS, PredictionLog, read_feedback, read_predictions, recover,
                                  serve_dir)

MODEL = 'churn'

CHILD = textwrap.dedent('''
    import asyncio, sys
    from mlwork.core import open_workspace
    from mlwork.serve.predlog import PredictionLog
    root, tag, n, commit_s, close = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == '1'

    async def main():
        log = PredictionLog(open_workspace(root), 'churn', flush_ms=1, commit_s=commit_s)
        async def worker(k):  # 16 concurrent requests, each logged before it is acknowledged
            for i in range(k, n, 16):
                rid = f'{tag}-{i}'
                await log.write([{'request_id': rid, 'version': 1, 'arm': 'champion', 'prediction': i / n,
                                  'latency_ms': 0.5, 'features': {'age': i, 'city': 'Oslo'}}])
                print(rid, flush=True)  # acknowledged: write returned
        await asyncio.gather(*(worker(k) for k in range(16)))
        if close:
            log.close()
    asyncio.run(main())
''')


@pytest.fixture
def ws(tmp_path):
    return open_workspace(init_workspace(tmp_path / 'ws').workspace.root)


def _child(ws, tag: str, n: int, commit_s: float, close: bool, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', CHILD, str(ws.root), tag, str(n), str(commit_s), '1' if close else '0'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _acked(out: str) -> list[str]:
    "Complete lines only: a line cut by the kill was not fully printed."
    lines = out.split('\n')
    return [x for x in lines[:-1] if x]


def _rec(rid: str, **features) -> dict:
    return {'request_id': rid, 'version': 1, 'arm': 'champion', 'prediction': 0.5, 'features': features}


def test_kill9_loses_no_acknowledged_prediction(ws):
    proc = _child(ws, 'a', 1_000_000, 0.2, False)
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 3000 and time.monotonic() < deadline:  # past several Delta moves, mid-stream
        seen.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    acked = set(seen + _acked(rest))
    assert len(acked) >= 3000
    wal = serve_dir(ws, MODEL) / 'wal'
    assert list(wal.glob('pred-*.wal')), 'the kill left un-moved segments behind'
    df = read_predictions(ws, MODEL)
    ids = df['request_id']
    assert ids.n_unique() == df.height  # no duplicates
    missing = acked - set(ids)
    assert not missing, f'{len(missing)} acknowledged predictions lost, e.g. {sorted(missing)[:3]}'
    assert not list(wal.glob('pred-*.wal'))  # recovered and removed
    assert recover(ws, MODEL) == 0 and read_predictions(ws, MODEL).height == df.height


def test_concurrent_writer_processes_exactly_once(ws):
    n = 1500
    procs = [_child(ws, f'w{k}', n, 0.05, True) for k in range(3)]  # frequent moves: concurrent Delta commits
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    df = read_predictions(ws, MODEL)
    assert df.height == 3 * n
    assert df['request_id'].n_unique() == 3 * n
    assert set(df['request_id']) == {f'w{k}-{i}' for k in range(3) for i in range(n)}
    assert not list((serve_dir(ws, MODEL) / 'wal').glob('*.wal'))


def test_kill_between_delta_commit_and_wal_delete_does_not_duplicate(ws):
    from deltalake import DeltaTable
    proc = _child(ws, 'k', 1_000_000, 0.3, False, env={'MLWORK_KILL_AT': 'predlog.after_commit'})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err  # killed itself right after its first Delta commit
    acked = set(_acked(out))
    table = serve_dir(ws, MODEL) / 'predictions'
    committed = DeltaTable(str(table)).to_pyarrow_table().num_rows
    segments = sorted((serve_dir(ws, MODEL) / 'wal').glob('pred-*.wal'))
    first = segments[0]
    assert first.name.endswith('-0000000000000000.wal')  # the committed segment is still there
    assert DeltaTable(str(table)).transaction_version(first.name.rsplit('-', 1)[0]) == first.stat().st_size
    df = read_predictions(ws, MODEL)
    assert df['request_id'].n_unique() == df.height, 'recovery re-committed the segment that was already in Delta'
    assert df.height >= committed and acked <= set(df['request_id'])


def test_torn_last_line_is_ignored(ws):
    wal = serve_dir(ws, MODEL) / 'wal'
    wal.mkdir(parents=True)
    good = json.dumps({'request_id': 'ok', 'ts': 0, 'version': 1, 'arm': 'champion', 'entity_key': None,
                       'prediction': 0.1, 'probabilities': None, 'label': None, 'latency_ms': None, 'reasons': None,
                       'features': {'age': 3.0}})
    seg = wal / 'pred-00000000-1-2-ab-0000000000000000.wal'  # a replica on another host, silent for an hour
    seg.write_text(good + '\n' + good[:40])
    os.utime(seg, (time.time() - 3600,) * 2)
    df = read_predictions(ws, MODEL)
    assert df['request_id'].to_list() == ['ok']


def _write(log: PredictionLog, records: list[dict]) -> None:
    asyncio.run(log.write(records))


def test_pii_never_reaches_disk_and_pseudonyms_join(ws):
    secret_mail, secret_key = 'alice.secret@example.org', 'CUST-7731-SECRET'
    recs = [{**_rec(f'r{i}', email=secret_mail, age=30 + i), 'entity_key': secret_key,
             'reasons': [{'feature': 'email', 'value': secret_mail, 'contribution': 0.3}]} for i in range(5)]
    log = PredictionLog(ws, MODEL, pii=['email', 'entity_key'], pii_mode='pseudonymise', commit_s=60)
    _write(log, recs)
    log.flush()
    folder = serve_dir(ws, MODEL)

    def raw() -> bytes:
        return b''.join(p.read_bytes() for p in folder.rglob('*') if p.is_file())
    assert list((folder / 'wal').glob('*.wal')) and b'secret' not in raw().lower()
    log.close()
    assert b'secret' not in raw().lower()  # the Delta files neither
    other = PredictionLog(ws, MODEL, pii=['email', 'entity_key'], pii_mode='pseudonymise')
    _write(other, [{**_rec('s1', email=secret_mail), 'entity_key': secret_key}])
    other.close()
    df = read_predictions(ws, MODEL)
    assert df['entity_key'].n_unique() == 1 and len(df['entity_key'][0]) == 64  # stable: joins still work
    assert df['features'].struct.field('email').n_unique() == 1
    assert all(json.loads(r)[0]['value'] == df['features'].struct.field('email')[0] for r in df['reasons'] if r)
    masked = PredictionLog(ws, 'masked', pii=['email'])
    _write(masked, [_rec('m1', email=secret_mail, age=1)])
    masked.close()
    assert read_predictions(ws, 'masked')['features'].struct.field('email').to_list() == ['***']
    for p in folder.rglob('*'):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_schema_merge_when_a_feature_is_added(ws):
    with PredictionLog(ws, MODEL) as v1:
        _write(v1, [_rec('v1', age=40, city='Oslo')])
    with PredictionLog(ws, MODEL) as v2:
        _write(v2, [{**_rec('v2', age=41, city='Bergen', tenure=3.5, vip=True), 'version': 2}])
    df = read_predictions(ws, MODEL).sort('version')
    feats = df['features'].struct.unnest()
    assert dict(feats.schema) == {'age': pl.Float64, 'city': pl.String, 'tenure': pl.Float64, 'vip': pl.Boolean}
    assert feats.rows() == [(40.0, 'Oslo', None, None), (41.0, 'Bergen', 3.5, True)]
    assert df.columns == list(PREDICTION_COLUMNS)


def test_not_durable_mode_and_feedback(ws):
    log = PredictionLog(ws, MODEL, durable=False, flush_ms=1)

    async def go() -> None:
        await asyncio.gather(*(log.write([_rec(f'r{i}', age=i)]) for i in range(50)))
        await log.feedback([{'request_id': 'r7', 'label': 1}, {'request_id': 'r9', 'label': 'churned'}])
    asyncio.run(go())
    log.write_nowait([_rec('late', age=1)])
    log.close()
    assert log.fsyncs == 0
    preds, fb = read_predictions(ws, MODEL), read_feedback(ws, MODEL)
    assert preds.height == 51
    assert sorted(fb.select('request_id', 'label').rows()) == [('r7', '1'), ('r9', 'churned')]
    assert fb.schema['ts'] == pl.Datetime('us', 'UTC')
    with pytest.raises(RuntimeError, match='closed'):
        log.write_nowait([_rec('after', age=1)])


def test_bad_input_names_the_field(ws):
    log = PredictionLog(ws, MODEL, pii=['email'])
    try:
        with pytest.raises(DataError, match=r"record 1: unknown field\(s\) 'colour'"):
            log.write_nowait([_rec('a', age=1), {**_rec('b', age=1), 'colour': 'red'}])
        with pytest.raises(DataError, match='`features.when` must be a number, a string, a bool or None'):
            log.write_nowait([_rec('a', when=object())])
        with pytest.raises(DataError, match='value not shown: PII') as e:
            log.write_nowait([_rec('a', email=['x@y.z'])])
        assert 'x@y.z' not in str(e.value)
        with pytest.raises(DataError, match='`reasons` must be JSON-serialisable'):
            log.write_nowait([{**_rec('a', age=1), 'reasons': [{'v': {1, 2}}]}])
        with pytest.raises(DataError, match='`arm` must be one of champion, challenger, shadow'):
            log.write_nowait([{**_rec('a', age=1), 'arm': 'blue'}])
        log.write_nowait([_rec('a', age=1)])
        with pytest.raises(DataError, match='`features.age` is a string here but was a number'):
            log.write_nowait([_rec('b', age='old')])
        with pytest.raises(DataError, match='missing field'):
            asyncio.run(log.write([{'request_id': 'x'}]))
    finally:
        log.close()
    assert read_predictions(ws, MODEL)['request_id'].to_list() == ['a']  # nothing of a refused call was logged
    with pytest.raises(InvalidParameter, match="'pii_mode' parameter of PredictionLog"):
        PredictionLog(ws, MODEL, pii=['email'], pii_mode='encrypt')
    with pytest.raises(InvalidParameter, match='cannot name a folder'):
        PredictionLog(ws, '../etc')
