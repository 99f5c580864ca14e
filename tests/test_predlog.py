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
    assert _offset(ws, MODEL) == len(good) + 1  # the committed offset ends after the last complete line


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


def test_a_durable_write_does_not_wait_for_a_delta_move(ws):
    "The mover holds `private_umask`'s process lock for a whole Delta write; opening a new WAL segment must not need it."
    import threading

    from mlwork.core import private_umask
    log = PredictionLog(ws, MODEL, commit_s=60)
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def mover() -> None:  # what `_move_stream` does for the length of a `write_deltalake`
        with private_umask():
            holding.set()
            release.wait(60)
    t = threading.Thread(target=mover)
    t.start()
    holding.wait(10)
    old = os.umask(0o022)  # a permissive umask: the segment must still be private
    try:
        w = threading.Thread(target=lambda: (_write(log, [_rec('during-move', age=1)]), done.set()))
        w.start()
        answered = done.wait(30)  # liveness, not speed: without the fix the write waits until `release`
        segments = list((serve_dir(ws, MODEL) / 'wal').glob('*.wal'))
    finally:
        os.umask(old)
        release.set()
        t.join()
    w.join()
    assert answered, 'a durable write waited for the lock a Delta move holds'
    assert segments and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in segments)
    log.close()
    assert read_predictions(ws, MODEL)['request_id'].to_list() == ['during-move']


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


def _records(n: int) -> list[dict]:
    "Varied records: PII, nulls, NaN, multiclass probabilities without a prediction, reasons naming a PII feature."
    from datetime import datetime, timedelta, timezone
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        multi = i % 7 == 0
        out.append({'request_id': f'r{i}', 'ts': t0 + timedelta(microseconds=1234567 * i), 'model': MODEL,
                    'version': 1 + i % 2, 'arm': ('champion', 'challenger', 'shadow')[i % 3],
                    'entity_key': None if i % 5 == 0 else f'CUST-{i % 11}',
                    'prediction': None if multi else (float('nan') if i == 3 else i / n),
                    'probabilities': [0.2, 0.3, 0.5] if multi else None, 'label': 'yes' if i % 2 else None,
                    'latency_ms': 0.25 * i,
                    'reasons': json.dumps([{'feature': 'email', 'value': f'u{i % 4}@x.org', 'contribution': 0.5}])
                    if i % 4 == 0 else None,
                    'features': {'age': None if i % 6 == 0 else float(20 + i % 50), 'city': ['Oslo', 'Bergen', None][i % 3],
                                 'email': f'u{i % 4}@x.org', 'cust_no': float(1000 + i % 9), 'vip': i % 2 == 0}})
    return out


def _frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(records, schema={
        'request_id': pl.String, 'ts': pl.Datetime('us', 'UTC'), 'model': pl.String, 'version': pl.Int64, 'arm': pl.String,
        'entity_key': pl.String, 'prediction': pl.Float64, 'probabilities': pl.List(pl.Float64), 'label': pl.String,
        'latency_ms': pl.Float64, 'reasons': pl.String,
        'features': pl.Struct({'age': pl.Float64, 'city': pl.String, 'email': pl.String, 'cust_no': pl.Float64,
                               'vip': pl.Boolean})})


@pytest.mark.parametrize('mode', ['pseudonymise', 'mask'])
def test_write_frame_reads_back_as_write(ws, mode):
    recs = _records(100)
    pii = ['email', 'entity_key', 'cust_no']
    log = PredictionLog(ws, MODEL, pii=pii, pii_mode=mode, commit_s=60)

    async def go() -> None:
        await log.write(recs)
        before = log.fsyncs
        await log.write_frame(_frame([{**r, 'request_id': 'f' + r['request_id']} for r in recs]))
        assert log.fsyncs == before + 1  # one group, one fsync
    asyncio.run(go())
    log.flush()
    raw = b''.join(p.read_bytes() for p in (serve_dir(ws, MODEL) / 'wal').glob('*.wal'))
    assert b'@x.org' not in raw and b'CUST-' not in raw
    log.close()
    df = read_predictions(ws, MODEL)
    assert df.height == 200 and df.columns == list(PREDICTION_COLUMNS)
    by_write = df.filter(~pl.col('request_id').str.starts_with('f')).sort('request_id')
    by_frame = (df.filter(pl.col('request_id').str.starts_with('f'))
                .with_columns(pl.col('request_id').str.slice(1)).sort('request_id'))
    assert by_write.to_dicts() == by_frame.to_dicts()  # NaN was logged as null both ways, so == holds
    assert by_write.filter(request_id='r3')['prediction'].to_list() == [None]
    assert b'@x.org' not in b''.join(p.read_bytes() for p in serve_dir(ws, MODEL).rglob('*.parquet'))
    if mode == 'pseudonymise':  # an independent HMAC of the canonical text: '1003.0' for the number 1003
        import hashlib
        import hmac
        import base64
        from mlwork.security import DATA_KEY_FILE, keys_dir
        raw_key = base64.b64decode((keys_dir(ws) / DATA_KEY_FILE).read_bytes().strip())  # the key as stored, read by hand
        key = hmac.new(raw_key, b'mlwork-derive:mlwork.serve.predlog.pseudonym', hashlib.sha256).digest()
        row = by_frame.filter(request_id='r3').row(0, named=True)
        assert row['features']['cust_no'] == hmac.new(key, b'1003.0', hashlib.sha256).hexdigest()
        assert row['entity_key'] == hmac.new(key, b'CUST-3', hashlib.sha256).hexdigest()
        assert row['features']['email'] == hmac.new(key, b'u3@x.org', hashlib.sha256).hexdigest()
        first = by_frame.filter(request_id='r0').row(0, named=True)
        assert json.loads(first['reasons'])[0]['value'] == first['features']['email']
        other = PredictionLog(ws, 'ints', pii=['cust_no'], pii_mode=mode)  # an int and its float: one pseudonym
        _write(other, [_rec('i', cust_no=1003)])
        other.close()
        assert read_predictions(ws, 'ints')['features'][0]['cust_no'] == row['features']['cust_no']
    else:
        assert set(by_frame['features'].struct.field('email')) == {'***'}


def test_write_frame_fills_optional_columns_and_not_durable(ws):
    log = PredictionLog(ws, MODEL, durable=False)
    frame = pl.DataFrame({'request_id': ['a', 'b'], 'version': [1, 1], 'arm': ['champion', 'shadow'],
                          'prediction': [0.1, 0.9], 'features': [{'age': 3, 'city': 'Oslo'}, {'age': None, 'city': None}]})
    t = time.time()
    log.write_frame_nowait(frame)
    log.write_frame_nowait(frame.clear())  # nothing to log
    log.close()
    assert log.fsyncs == 0
    df = read_predictions(ws, MODEL).sort('request_id')
    assert df['model'].to_list() == [MODEL, MODEL] and df['entity_key'].to_list() == [None, None]
    assert df['features'].struct.unnest().rows() == [(3.0, 'Oslo'), (None, None)]
    assert all(abs(ts.timestamp() - t) < 60 for ts in df['ts'])


def test_write_frame_bad_input_names_the_column(ws):
    from datetime import datetime
    good = _frame(_records(3)).drop('model')
    log = PredictionLog(ws, MODEL, pii=['email'])
    try:
        cases = [(good.with_columns(colour=pl.lit(1)), r"unknown column\(s\) 'colour'"),
                 (good.drop('arm'), r'missing column\(s\) arm'),
                 (good.with_columns(arm=pl.Series(['champion', 'blue', 'shadow'])),
                  r"row 1: field `arm` must be one of champion, challenger, shadow; found 'blue'"),
                 (good.with_columns(version=pl.lit('1')), r'column `version` must be an integer type; found String'),
                 (good.with_columns(prediction=pl.lit('x')), r'column `prediction` must be a numeric type .*found String'),
                 (good.with_columns(ts=pl.lit(datetime(2024, 1, 1))), r'`ts` is a naive Datetime'),
                 (good.with_columns(features=pl.struct(when=pl.lit(datetime(2024, 1, 1)))),
                  r'feature `features.when` must be .*found Datetime'),
                 (good.with_columns(request_id=pl.Series(['a', None, 'c'])), r'row 1: field `request_id` must be'),
                 (good.with_columns(prediction=None, probabilities=None), r'row 0: field `prediction` must be a number'),
                 (good.with_columns(model=pl.lit('other')), r"row 0: field `model` must be 'churn'"),
                 (good.to_dicts(), r'Expected a polars DataFrame')]
        for frame, message in cases:
            with pytest.raises(DataError, match=message):
                log.write_frame_nowait(frame)
        log.write_frame_nowait(good)
        bad_kind = good.with_columns(features=pl.struct(age=pl.lit('old')))
        with pytest.raises(DataError, match='`features.age` is a string here but was a number'):
            asyncio.run(log.write_frame(bad_kind))
        with pytest.raises(DataError, match='`features.vip` is a string here but was a bool'):  # kinds shared with write
            log.write_nowait([_rec('x', vip='yes')])
    finally:
        log.close()
    assert read_predictions(ws, MODEL)['request_id'].to_list() == ['r0', 'r1', 'r2']  # nothing of a refused call


FRAME_CHILD = textwrap.dedent('''
    import asyncio, sys
    import polars as pl
    from mlwork.core import open_workspace
    from mlwork.serve.predlog import PredictionLog
    root, size = sys.argv[1], int(sys.argv[2])

    async def main():
        log = PredictionLog(open_workspace(root), 'churn', flush_ms=1, commit_s=0.2)
        async def worker(k):  # 4 concurrent batches; each acknowledged once write_frame returned
            for b in range(k, 10**9, 4):
                frame = pl.DataFrame({'request_id': [f'b{b}-{i}' for i in range(size)], 'version': [1] * size,
                                      'arm': ['champion'] * size, 'prediction': [i / size for i in range(size)],
                                      'features': [{'age': float(i), 'city': 'Oslo'} for i in range(size)]})
                await log.write_frame(frame)
                print(f'b{b}', flush=True)
        await asyncio.gather(*(worker(k) for k in range(4)))
    asyncio.run(main())
''')


def test_kill9_during_write_frame_loses_no_acknowledged_batch(ws):
    size = 300
    proc = subprocess.Popen([sys.executable, '-c', FRAME_CHILD, str(ws.root), str(size)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 150 and time.monotonic() < deadline:  # past several Delta moves, mid-stream
        seen.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    acked = set(seen + _acked(rest))
    assert len(acked) >= 150
    df = read_predictions(ws, MODEL)
    ids = df['request_id']
    assert ids.n_unique() == df.height  # no duplicates
    batches = df.group_by(pl.col('request_id').str.extract(r'^(b\d+)-')).len()
    assert set(batches['len']) == {size}  # every batch whole: a torn batch was dropped as a whole
    missing = acked - set(batches['request_id'])
    assert not missing, f'{len(missing)} acknowledged batches lost, e.g. {sorted(missing)[:3]}'
    assert df['features'].struct.field('age').sum() == sum(range(size)) * batches.height
    assert not list((serve_dir(ws, MODEL) / 'wal').glob('pred-*.wal'))
    assert recover(ws, MODEL) == 0


def _dead_segment(ws, model: str, data: bytes) -> None:
    "A segment of a replica on another host, silent for an hour: recovery moves it."
    wal = serve_dir(ws, model) / 'wal'
    wal.mkdir(parents=True, exist_ok=True)
    seg = wal / 'pred-00000000-1-2-ab-0000000000000000.wal'
    seg.write_bytes(data)
    os.utime(seg, (time.time() - 3600,) * 2)


def _offset(ws, model: str) -> int:
    "The byte offset of the dead replica's stream that the Delta table records (its app transaction)."
    from deltalake import DeltaTable
    return DeltaTable(str(serve_dir(ws, model) / 'predictions')).transaction_version('pred-00000000-1-2-ab')


def _mixed_segment(ws) -> tuple[bytes, int, int]:
    "A real segment: write, write_frame, write, then a last write_frame; its bytes and where the last record starts."
    recs = _records(30)
    log = PredictionLog(ws, MODEL, pii=['email'], commit_s=600)
    wal = serve_dir(ws, MODEL) / 'wal'

    def size() -> int:
        log.flush()
        return sum(p.stat().st_size for p in wal.glob('pred-*.wal'))

    async def go() -> tuple[int, int]:
        await log.write(recs[:10])
        await log.write_frame(_frame(recs[10:20]))
        await log.write(recs[20:25])
        start = size()
        await log.write_frame(_frame(recs[25:]))
        return start, size()
    start, end = asyncio.run(go())
    (seg,) = wal.glob('pred-*.wal')
    data = seg.read_bytes()
    assert len(data) == end and data[start:start + 7] == b'#arrow ' and data.count(b'#arrow ') == 2
    log.close()
    return data, start, end


def test_mixed_write_and_write_frame_in_one_segment(ws):
    data, _, _ = _mixed_segment(ws)
    assert data.startswith(b'{"request_id":"r0"')
    _dead_segment(ws, 'copy', data)  # the same bytes recovered from a dead writer's segment
    assert recover(ws, 'copy') == 30
    direct, recovered = (read_predictions(ws, m).sort('request_id').drop('model') for m in (MODEL, 'copy'))
    assert direct.height == 30 and direct['request_id'].n_unique() == 30
    assert recovered.to_dicts() == direct.to_dicts()
    assert set(direct['features'].struct.field('email')) == {'***'}
    expect = pl.DataFrame(_records(30)).sort('request_id')
    assert direct['latency_ms'].to_list() == expect['latency_ms'].to_list()
    assert direct['version'].to_list() == expect['version'].to_list()
    assert direct['features'].struct.field('age').to_list() == expect['features'].struct.field('age').to_list()


def test_torn_arrow_record_at_the_end_is_ignored(ws, caplog):
    data, start, end = _mixed_segment(ws)
    head = data.index(b'\n', start) + 1
    cuts = [start + 1, start + 7, head - 3, head - 1, head, head + 8, (head + end) // 2, end - 1]
    for k, cut in enumerate(cuts):
        model = f'torn{k}'
        _dead_segment(ws, model, data[:cut])
        assert recover(ws, model) == 25, cut
        df = read_predictions(ws, model)
        assert sorted(df['request_id']) == sorted(f'r{i}' for i in range(25)), cut  # the rows before, exactly once
        assert _offset(ws, model) == start, cut  # the committed offset stops before the torn record
        assert recover(ws, model) == 0
    damaged = bytearray(data)
    damaged[(head + end) // 2] ^= 0xFF  # complete length, wrong checksum: a torn write cannot pass for a batch
    _dead_segment(ws, 'damaged', bytes(damaged))
    assert recover(ws, 'damaged') == 25
    assert 'fails its checksum' in caplog.text
    _dead_segment(ws, 'whole', data)
    assert recover(ws, 'whole') == 30


def _scorer():
    "What `log_frame` reads of a scorer: its name, version and feature schema (numbers, a boolean, categories)."
    from types import SimpleNamespace
    from mlwork.serve.scoring import FeatureSchema
    feats = ['age', 'income', 'vip', 'city', 'email']
    schema = FeatureSchema(feats, {'age': 'numeric', 'income': 'numeric', 'vip': 'numeric', 'city': 'categorical',
                                   'email': 'categorical'},
                           {'city': ['Bergen', 'Oslo'], 'email': [f'u{i}@x.org' for i in range(5)]},
                           {f: True for f in feats}, frozenset({'vip'}))
    return SimpleNamespace(name=MODEL, version=4, schema=schema)


@pytest.mark.parametrize('pii', [(), ('email', 'entity_key', 'income')])
@pytest.mark.parametrize('body', ['arrow', 'json'])
def test_the_services_checked_frames_equal_fully_checked_ones(ws, body, pii):
    """A batch's frame from `log_frame` (NaN, infinities, nulls, a boolean, categories, keys, reasons, multiclass, a
    split batch) has the features the request sent, and written with `checked=True` gives the same WAL lines as the
    full check and casts of the same records."""
    import pyarrow as pa
    from mlwork.serve.app import Batch, log_frame
    from mlwork.serve.predlog import _frame_lines
    n = 50
    bad = [float('nan'), float('inf'), None, 30.0] if body == 'arrow' else [float('nan'), None, None, 30.0]
    rows = [{'age': bad[i % 4] if i % 3 else 41.0, 'income': i * 1000, 'vip': i % 2 == 0,
             'city': ['Oslo', None, 'Bergen'][i % 3], 'email': f'u{i % 5}@x.org', 'extra': 'dropped'} for i in range(n)]
    table = pa.Table.from_pylist(rows)
    batch = Batch(rows if body == 'json' else None, None if body == 'json' else table,
                  [None if i % 6 == 0 else f'CUST-{i % 7}' for i in range(n)], 0)
    scorer = _scorer()
    sent = pl.DataFrame(rows).select(  # the features as sent, typed as the log keeps them (built without the matrix)
        age=pl.when(pl.col('age').is_finite()).then(pl.col('age')), income=pl.col('income').cast(pl.Float64),
        vip=pl.col('vip').cast(pl.Float64), city='city', email='email')
    cases = [({'prediction': [i / n for i in range(n)], 'label': ['yes' if i % 2 else 'no' for i in range(n)]}, list(range(n))),
             ({'prediction': [0.5] * 20, 'probabilities': [[0.2, 0.3, 0.5]] * 20, 'label': [2] * 20,
               'reasons': [[{'feature': 'email', 'value': 'u1@x.org', 'contribution': 0.5}]] * 20}, list(range(5, 45, 2)))]
    fast = PredictionLog(ws, MODEL, pii=list(pii), commit_s=60)
    full = PredictionLog(ws, MODEL, pii=list(pii), commit_s=60)
    try:
        for cols, idx in cases:
            frame = log_frame(batch, idx, 'req', scorer, 'challenger', cols, 2.5, batch.matrix(scorer, idx))
            assert frame['features'].struct.unnest().to_dicts() == sent[idx].to_dicts()
            got, rows_got = _frame_lines(fast, frame, checked=True)
            as_user = frame.with_columns(pl.col('ts').cast(pl.Datetime('us', 'UTC')), model=pl.lit(MODEL))
            want, rows_want = _frame_lines(full, as_user)
            assert rows_got == rows_want == len(idx)
            assert got.schema == want.schema and got.equals(want)
            assert got['request_id'].to_list() == [f'req:{i}' for i in idx]
            ages = got['features'].struct.field('age').to_list()
            assert all(a is None or a in (30.0, 41.0) for a in ages) and None in ages  # NaN and inf: missing
            if pii:
                assert not any('@x.org' in str(v) for v in got['features'].struct.field('email').to_list())
                assert not got['reasons'].drop_nulls().str.contains('@x.org').any()
        with pytest.raises(DataError, match="checked prediction frame has the lines' columns.*found request_id: String"):
            _frame_lines(fast, as_user, checked=True)
    finally:
        fast.close(); full.close()


def test_durable_writes_of_one_loop_turn_are_one_group_on_the_loop(ws, monkeypatch):
    "Durable JSON lines are written and fsynced by the event loop itself, one group per turn, before any writer returns."
    import threading
    log = PredictionLog(ws, MODEL, flush_ms=0, commit_s=60)
    on_disk: list[int] = []
    synced_by: list[threading.Thread] = []
    fdatasync = os.fdatasync
    monkeypatch.setattr(os, 'fdatasync', lambda fd: (synced_by.append(threading.current_thread()), fdatasync(fd))[1])

    async def one(i: int) -> None:
        await log.write([_rec(f'g{i}', age=float(i))])
        on_disk.append(sum(p.stat().st_size for p in (serve_dir(ws, MODEL) / 'wal').glob('*.wal')))

    async def go() -> threading.Thread:
        await asyncio.gather(*(one(i) for i in range(20)))                # 20 writers in one turn
        assert log.fsyncs == 1 and min(on_disk) > 0 and len(set(on_disk)) == 1  # one fsync; all written before the first returned
        await asyncio.gather(*(one(i) for i in range(20, 25)))
        assert log.fsyncs == 2
        return threading.current_thread()
    assert asyncio.run(go()) is threading.main_thread() and synced_by == [threading.main_thread()] * 2  # not the flusher
    log.close()
    with pytest.raises(RuntimeError, match='is closed'):
        asyncio.run(log.write([_rec('late')]))
    assert sorted(read_predictions(ws, MODEL)['request_id'].to_list()) == sorted(f'g{i}' for i in range(25))
