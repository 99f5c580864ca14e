"""Fault injection on the anchored audit log, through the real `mlwork` executable on real workspaces: every way of
cutting, rewriting or forging the log is found by the default `mlwork audit verify` (exit 1, one line); intact logs
exit 0; a writer SIGKILLed between its entry and its checkpoint (the `MLWORK_KILL_AT` test hook) is recovered, not
reported as tampering; concurrent signed appenders lose nothing; the files are created 0600 under umask 022."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import clean_env, run_mlwork
from mlwork.checks import canonical_json
from mlwork.security import KeyPair

N = 6  # entries in the base log
APPEND = textwrap.dedent("""
    import sys
    from mlwork.audit import AuditLog
    from mlwork.core import open_workspace
    log = AuditLog.for_workspace(open_workspace(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        log.append('model.promote', who=sys.argv[3], what={'model': 'credit', 'i': i}, why='fault test')
""")


def append(home: Path, n: int, who: str = 'ann', env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', APPEND, str(home), str(n), who], env=clean_env(env),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope='module')
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('audit_faults')
    home = root / 'ws'
    assert run_mlwork('init', '--home', str(home), cwd=root).code == 0
    assert append(home, N).returncode == 0
    return home


@pytest.fixture
def ws(base, tmp_path) -> Path:
    home = tmp_path / 'ws'
    shutil.copytree(base, home)
    return home


def log_path(home: Path) -> Path:
    return home / 'audit' / 'audit.jsonl'


def verify(home: Path, *extra: str):
    return run_mlwork('audit', 'verify', '--home', str(home), *extra, cwd=home.parent)


def assert_tampered(home: Path, contains: str, *extra: str) -> None:
    r = verify(home, *extra)
    assert r.code == 1, (r.code, r.out, r.err)
    lines = r.out.strip().splitlines()
    assert len(lines) == 1 and 'TAMPERED' in lines[0] and 'Traceback' not in r.err, (r.out, r.err)
    assert contains in lines[0], lines[0]


def entries(home: Path) -> list[dict]:
    return [json.loads(l) for l in log_path(home).read_bytes().splitlines()]


def rechain(rows: list[dict], start: int = 0, renumber: bool = False) -> bytes:
    "Recompute seq (optionally), prev_hash and hash from row `start` on, as a forger without the key would."
    prev = rows[start - 1]['hash'] if start else '0' * 64
    for i, d in enumerate(rows[start:], start=start + 1):
        if renumber:
            d['seq'] = i
        d['prev_hash'] = prev
        d['hash'] = prev = hashlib.sha256(canonical_json({k: v for k, v in d.items() if k != 'hash'})).hexdigest()
    return b''.join(json.dumps(d).encode() + b'\n' for d in rows)


def test_intact_log_exits_0(ws):
    r = verify(ws, '--json')
    assert r.code == 0, r.err
    d = r.json()
    assert (d['ok'], d['entries'], d['anchored'], d['newest_anchor'], d['signed']) == (True, N, N, 'checkpoint', True)
    r = verify(ws)
    assert r.code == 0 and f'intact, {N} entries' in r.out and f'anchored at entry {N} by checkpoint' in r.out


def test_rewrite_from_line_3_with_rehashing(ws):
    rows = entries(ws)
    rows[2]['why'] = 'nothing to see here'
    log_path(ws).write_bytes(rechain(rows, start=2))
    assert_tampered(ws, 'entry 6 has hash')   # the newest checkpoint no longer matches


def test_rewrite_from_line_3_unsigned_and_checkpoints_deleted(ws):
    rows = entries(ws)
    for d in rows[2:]:
        d.pop('sig'); d.pop('key_id')
    rows[2]['who'] = 'mallory'
    log_path(ws).write_bytes(rechain(rows, start=2))
    (ws / 'audit' / 'audit.checkpoints.jsonl').unlink()
    assert_tampered(ws, 'is not signed, but this log is')


def test_delete_the_last_lines(ws):
    log_path(ws).write_bytes(b''.join(log_path(ws).read_bytes().splitlines(keepends=True)[:3]))
    assert_tampered(ws, f'checkpoint records {N} entries')


def test_delete_a_middle_line_and_renumber(ws):
    rows = entries(ws)
    del rows[2]
    log_path(ws).write_bytes(rechain(rows, start=2, renumber=True))
    assert_tampered(ws, 'checkpoint records')


def test_append_a_forged_entry(ws):
    rows = entries(ws)
    forged = {'seq': N + 1, 'ts': rows[-1]['ts'], 'who': 'mallory', 'action': 'model.promote', 'what': {'version': 9},
              'why': 'looks legit', 'prev_hash': rows[-1]['hash']}
    forged['hash'] = hashlib.sha256(canonical_json(forged)).hexdigest()   # chained correctly, but unsigned
    with open(log_path(ws), 'ab') as f:
        f.write(json.dumps(forged).encode() + b'\n')
    assert_tampered(ws, f'line {N + 1} (seq {N + 1}) is not signed')


def test_append_an_entry_signed_by_an_attacker_key_saved_as_vendor_pub(ws):
    attacker = KeyPair.generate()
    (ws / 'keys' / 'vendor.pub').write_text(attacker.public.to_pem())  # known now, but never pinned
    rows = entries(ws)
    d = {'seq': N + 1, 'ts': rows[-1]['ts'], 'who': 'mallory', 'action': 'model.promote', 'what': {}, 'why': None,
         'prev_hash': rows[-1]['hash'], 'key_id': attacker.key_id}
    d['sig'] = base64.b64encode(attacker.sign(canonical_json(d))).decode()
    d['hash'] = hashlib.sha256(canonical_json(d)).hexdigest()
    with open(log_path(ws), 'ab') as f:
        f.write(json.dumps(d).encode() + b'\n')
    assert_tampered(ws, f'which is not in this workspace\'s trust list')


def test_empty_the_file(ws):
    log_path(ws).write_bytes(b'')
    assert_tampered(ws, 'the log has 0 valid entries')


def test_delete_the_file(ws):
    log_path(ws).unlink()
    assert_tampered(ws, 'the log has 0 valid entries')


def test_torn_last_line_under_an_anchor_is_tampering(ws):
    log_path(ws).write_bytes(log_path(ws).read_bytes()[:-30])
    assert_tampered(ws, f'torn line {N} that it covers')


def test_expected_head_must_be_a_sha256(ws):
    r = verify(ws, '--expected-head', 'zzz')
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and '--expected-head must be a SHA-256' in r.err, r.err
    head = verify(ws, '--json').json()['head']
    assert verify(ws, '--expected-head', head).code == 0


def test_saved_anchor_catches_deleting_both_files(ws, tmp_path):
    r = run_mlwork('audit', 'anchor', '--home', str(ws), '--json', cwd=tmp_path)
    assert r.code == 0 and r.json()['entries'] == N
    (tmp_path / 'anchor.json').write_text(r.out)
    log_path(ws).unlink()
    (ws / 'audit' / 'audit.checkpoints.jsonl').unlink()
    assert verify(ws).code == 0                                   # nothing in the workspace remembers...
    assert_tampered(ws, f'records {N} entries', '--anchor', str(tmp_path / 'anchor.json'))   # ...the saved anchor does


def test_sigkill_between_entry_and_checkpoint_is_recovered_not_tampering(ws):
    p = append(ws, 1, who='killed', env={'MLWORK_KILL_AT': 'audit.after_entry'})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    r = verify(ws, '--json')
    assert r.code == 0, r.out
    d = r.json()
    assert (d['ok'], d['entries'], d['anchored'], d['unanchored']) == (True, N + 1, N, 1)
    text = verify(ws).out
    assert '1 signed entry after it has no checkpoint yet' in text and len(text.strip().splitlines()) == 1
    assert append(ws, 1, who='next').returncode == 0                # the next append writes the missing checkpoint first
    d = verify(ws, '--json').json()
    assert (d['ok'], d['entries'], d['anchored'], d['unanchored']) == (True, N + 2, N + 2, 0)
    cps = [json.loads(l) for l in (ws / 'audit' / 'audit.checkpoints.jsonl').read_bytes().splitlines()]
    assert [c['entries'] for c in cps] == list(range(1, N + 3))     # one checkpoint per entry again, none missing


def test_sigkill_then_a_torn_entry_is_a_crash(ws):
    p = append(ws, 1, who='killed', env={'MLWORK_KILL_AT': 'audit.after_entry'})
    assert p.returncode == -signal.SIGKILL
    log_path(ws).write_bytes(log_path(ws).read_bytes()[:-20])      # as if it had died inside the write
    r = verify(ws, '--json')
    d = r.json()
    assert (r.code, d['torn'], d['tampered'], d['entries']) == (0, True, False, N)
    assert append(ws, 1).returncode == 0 and verify(ws).code == 0


def test_sigkill_after_the_checkpoint_leaves_an_intact_log(ws):
    p = append(ws, 1, env={'MLWORK_KILL_AT': 'audit.after_checkpoint'})
    assert p.returncode == -signal.SIGKILL
    d = verify(ws, '--json').json()
    assert (d['ok'], d['entries'], d['unanchored']) == (True, N + 1, 0)


def test_concurrent_signed_appenders_lose_nothing(ws):
    procs = [subprocess.Popen([sys.executable, '-c', APPEND, str(ws), '15', f'w{k}'], env=clean_env()) for k in range(4)]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    d = verify(ws, '--json').json()
    assert (d['ok'], d['entries'], d['anchored']) == (True, N + 60, N + 60)
    who = [e['who'] for e in entries(ws)]
    assert all(who.count(f'w{k}') == 15 for k in range(4))


def test_files_are_private_under_umask_022(tmp_path):
    home = tmp_path / 'ws'
    code = ("import os, subprocess, sys; os.umask(0o022); "
            f"sys.exit(subprocess.run([{str(Path(sys.executable).parent / 'mlwork')!r}, 'init', '--home', {str(home)!r}]).returncode)")
    assert subprocess.run([sys.executable, '-c', code], env=clean_env(), timeout=120).returncode == 0
    wrapper = f"import os; os.umask(0o022); exec({APPEND!r})"
    assert subprocess.run([sys.executable, '-c', wrapper, str(home), '2', 'ann'], env=clean_env(), timeout=120).returncode == 0
    for f in (home / 'audit' / 'audit.jsonl', home / 'audit' / 'audit.checkpoints.jsonl', home / 'keys' / 'signing.key',
              home / 'keys' / 'signing.pub', home / 'mlwork.toml'):
        assert f.stat().st_mode & 0o777 == 0o600, (f, oct(f.stat().st_mode))
    assert (home / 'keys').stat().st_mode & 0o777 == 0o700
