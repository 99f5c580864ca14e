"""The audit log: real processes appending at once, each kind of tampering on the file itself, torn writes
from a crashed writer, an independent re-computation of the hash chain, and secrets masked before writing."""
from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from mlwork.audit import GENESIS_HASH, AuditLog, verify_lines
from mlwork.core import DataError, InvalidParameter, init_workspace


@pytest.fixture
def log(tmp_path):
    ws = init_workspace(tmp_path / 'ws').workspace
    lg = AuditLog.for_workspace(ws)
    assert lg.path == ws.path('audit') / 'audit.jsonl'
    for i in range(5):
        lg.append(f'step.{i}', who='ann', what={'i': i}, why=f'reason {i}')
    return lg


def lines(lg: AuditLog) -> list[bytes]:
    return lg.path.read_bytes().split(b'\n')[:-1]


def write(lg: AuditLog, rows: list[bytes]) -> None:
    lg.path.write_bytes(b'\n'.join(rows) + b'\n')


def oracle_chain_ok(data: bytes) -> bool:
    "An independent re-implementation of the chain rule, written from the spec."
    prev = '0' * 64
    for n, raw in enumerate(data.splitlines(), start=1):
        d = json.loads(raw)
        body = {k: v for k, v in d.items() if k != 'hash'}
        h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()).hexdigest()
        if d['hash'] != h or d['prev_hash'] != prev or d['seq'] != n:
            return False
        prev = h
    return True


def test_append_and_chain(log):
    v = log.verify()
    assert (v.ok, v.entries, v.first_bad_line, v.reason, v.tampered) == (True, 5, None, None, False)
    assert oracle_chain_ok(log.path.read_bytes())
    first = json.loads(lines(log)[0])
    assert first['prev_hash'] == GENESIS_HASH and first['ts'].endswith('+00:00')
    e = log.append('model.promote')
    assert e.who == getpass.getuser() and e.seq == 6 and e.what == {} and e.why is None
    assert log.head() == e.hash
    frame = log.entries()
    assert frame.height == 6 and frame['seq'].to_list() == [1, 2, 3, 4, 5, 6]
    assert frame.schema['ts'] == pl.Datetime('us', 'UTC')
    assert json.loads(frame['what'][2]) == {'i': 2}
    assert 'intact' in log._repr_html_() and log.to_dict()['verify_ok'] is True


def test_edited_line(log):
    rows = lines(log)
    rows[2] = rows[2].replace(b'"reason 2"', b'"reason X"')
    write(log, rows)
    v = log.verify()
    assert (v.ok, v.tampered, v.first_bad_line, v.entries) == (False, True, 3, 2)
    assert 'line 3 (seq 3) was edited' in v.reason and 'TAMPERED' in v._repr_html_()
    assert not oracle_chain_ok(log.path.read_bytes())
    assert log.entries().height == 2  # only the entries before the damage


def test_edited_line_with_recomputed_hash_breaks_the_next_link(log):
    rows = lines(log)
    d = json.loads(rows[1]); d['who'] = 'mallory'
    body = {k: v for k, v in d.items() if k != 'hash'}
    d['hash'] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':')).encode()).hexdigest()
    rows[1] = json.dumps(d).encode()
    write(log, rows)
    v = log.verify()
    assert (v.first_bad_line, v.tampered) == (3, True) and 'does not chain to the line before' in v.reason


def test_deleted_line(log):
    rows = lines(log)
    write(log, rows[:1] + rows[2:])
    v = log.verify()
    assert (v.first_bad_line, v.entries, v.tampered) == (2, 1, True)
    assert 'has seq 3, expected 2: entries were deleted or reordered' in v.reason


def test_reordered_lines(log):
    rows = lines(log)
    rows[3], rows[4] = rows[4], rows[3]
    write(log, rows)
    v = log.verify()
    assert (v.first_bad_line, v.tampered) == (4, True) and 'has seq 5, expected 4' in v.reason
    write(log, rows[:3] + [rows[1]] + rows[3:])  # a duplicated line
    v = log.verify()
    assert v.first_bad_line == 4 and 'reordered or duplicated' in v.reason


def test_truncated_at_the_end_is_found_by_the_checkpoints(log):
    head = log.head()
    write(log, lines(log)[:3])
    assert verify_lines(log.path.read_bytes()).ok  # a hash chain cannot see removal of its last entries by itself...
    v = log.verify()                                # ...the signed checkpoints beside the log can
    assert (v.ok, v.tampered) == (False, True) and 'checkpoint records 5 entries' in v.reason
    v = log.verify(expected_head=head)
    assert (v.ok, v.tampered) == (False, True) and 'removed' in v.reason
    plain = AuditLog(tmp := log.path.with_name('plain.jsonl'))  # a log without a workspace: chain and expected head only
    for i in range(3):
        plain.append(f'step.{i}')
    h = plain.head()
    tmp.write_bytes(b''.join(tmp.read_bytes().splitlines(keepends=True)[:2]))
    assert plain.verify().ok
    v = plain.verify(expected_head=h)
    assert (v.ok, v.tampered) == (False, True) and 'removed from the end' in v.reason


def drop_last_checkpoint(lg: AuditLog) -> None:
    "What a writer killed before its checkpoint leaves: the checkpoints file without its last line."
    cps = lg.checkpoints_path.read_bytes().splitlines(keepends=True)
    lg.checkpoints_path.write_bytes(b''.join(cps[:-1]))


def test_torn_last_write_is_not_tampering_and_next_append_repairs(log):
    good = log.path.read_bytes()
    log.path.write_bytes(good[:-40])  # a writer died mid-line...
    v = log.verify()                  # ...under a checkpoint that covers the line: not a crash, a cut
    assert (v.ok, v.torn, v.tampered, v.entries, v.first_bad_line) == (False, False, True, 4, 5)
    assert 'torn line 5 that it covers' in v.reason
    drop_last_checkpoint(log)         # as a real crash leaves it: no checkpoint for the torn entry
    v = log.verify()
    assert (v.ok, v.torn, v.tampered, v.entries, v.first_bad_line) == (False, True, False, 4, 5)
    assert 'incomplete write' in v.reason and 'torn last write' in v._repr_html_()
    torn_bytes = good[:-40].split(b'\n')[-1]
    e = log.append('after.crash')
    assert e.seq == 5 and log.verify().ok and oracle_chain_ok(log.path.read_bytes())
    aside = list(log.path.parent.glob('audit.jsonl.torn-*'))
    assert len(aside) == 1 and aside[0].read_bytes() == torn_bytes  # nothing lost: set aside, not deleted
    assert aside[0].stat().st_mode & 0o777 == 0o600


def test_complete_entry_missing_only_its_newline(log):
    log.path.write_bytes(log.path.read_bytes()[:-1])
    assert log.verify().ok
    assert log.append('next').seq == 6 and log.verify().ok
    assert not list(log.path.parent.glob('audit.jsonl.torn-*'))


def test_edited_last_line_without_newline_is_tampering(log):
    data = log.path.read_bytes()[:-1].replace(b'"reason 4"', b'"reason Z"')
    v = verify_lines(data)
    assert (v.tampered, v.first_bad_line) == (True, 5) and 'was edited' in v.reason


def test_append_refuses_garbage_last_line_and_changes_nothing(log):
    log.path.write_bytes(log.path.read_bytes() + b'garbage\n')
    before = log.path.read_bytes()
    with pytest.raises(DataError, match='its last line is not an audit entry'):
        log.append('x')
    assert log.path.read_bytes() == before


def test_secrets_masked_before_writing(log):
    log.append('db.connect', what={'dsn': 'host=db password=hunter2', 'api_key': 'AKIA123', 'nested': {'token': 't0k'}},
               why='rotate secret=s3cr3t')
    text = log.path.read_text()
    for secret in ('hunter2', 'AKIA123', 't0k', 's3cr3t'):
        assert secret not in text
    assert log.verify().ok


def test_bad_parameters(log):
    with pytest.raises(InvalidParameter, match="'action' parameter of AuditLog.append"):
        log.append('')
    with pytest.raises(InvalidParameter, match="'what' parameter"):
        log.append('x', what=['not', 'a', 'dict'])
    assert log.verify().entries == 5


def test_concurrent_processes(tmp_path):
    path = tmp_path / 'audit.jsonl'
    n_procs, n_each = 4, 40
    code = textwrap.dedent(f"""
        import sys
        from mlwork.audit import AuditLog
        log = AuditLog({str(path)!r})
        w = sys.argv[1]
        for i in range({n_each}):
            log.append('write', who=w, what={{'writer': w, 'i': i, 'pad': 'x' * 3000}})
    """)
    procs = [subprocess.Popen([sys.executable, '-c', code, f'w{k}']) for k in range(n_procs)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lg = AuditLog(path)
    v = lg.verify()
    assert v.ok and v.entries == n_procs * n_each, v.reason
    assert oracle_chain_ok(path.read_bytes())
    frame = lg.entries().with_columns(pl.col('what').str.json_decode(pl.Struct({'writer': pl.String, 'i': pl.Int64, 'pad': pl.String})))
    got = frame.select(pl.col('what').struct.field('writer'), pl.col('what').struct.field('i'))
    for k in range(n_procs):  # no lost lines, and each writer's entries in its own order
        assert got.filter(pl.col('writer') == f'w{k}')['i'].to_list() == list(range(n_each))


def test_entry_hash_is_stable_across_releases():
    "The hashed bytes are mlwork.checks.canonical_json: an entry hashed by an earlier release still has the same hash."
    from mlwork.audit import entry_hash
    from mlwork.checks import canonical_json
    e = {'seq': 1, 'ts': '2024-06-01T12:00:00.000000+00:00', 'who': 'zoë', 'action': 'model.promote',
         'what': {'model': 'credit', 'version': 3, 'metrics': {'auc': 0.8125, 'n': [1, 2.5, None, True]}, 'note': 'naïve → ok'},
         'why': 'gate passed', 'prev_hash': '0' * 64}
    known = '41290ec36acd3db030a9aafa83f58665d2e6aa26795228dab7e58d83c50fc893'  # computed by the release before the change
    assert entry_hash(e) == known == entry_hash({**e, 'hash': 'ignored'})
    assert hashlib.sha256(canonical_json(e)).hexdigest() == known
