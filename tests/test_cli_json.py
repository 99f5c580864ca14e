"""`--json` carries every fact the text shows: each command is run twice, as text and as JSON, and every number
(and hash prefix) the text prints must be in the JSON, at the precision the text shows it."""
from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from conftest import run_mlwork_in_process as run_mlwork  # dozens of calls: through the entry point, in this process

NUMBER = re.compile(r'(?<![\w.@/+-])[-+±]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w@])')
TIMESTAMP = re.compile(r'\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d')
HEX = re.compile(r'\b[0-9a-f]{8,}\b')


def _flatten(obj, strings: set, numbers: list) -> None:
    if isinstance(obj, dict):
        numbers.append(len(obj))
        for k, v in obj.items():
            strings.add(str(k))
            _flatten(v, strings, numbers)
    elif isinstance(obj, list):
        numbers.append(len(obj))
        for v in obj:
            _flatten(v, strings, numbers)
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, (int, float)):
        numbers.append(obj)
    else:
        strings.add(str(obj))


def _close(token: str, numbers: list) -> bool:
    t = token.replace(',', '').lstrip('±+')
    mant, _, exp = t.lower().partition('e')
    decimals = len(mant.partition('.')[2])
    value = float(t)
    tol = 0.5 * 10 ** (int(exp or 0) - decimals) * (1 + 1e-9)
    return any(isinstance(n, (int, float)) and math.isfinite(n) and abs(abs(n) - abs(value)) <= tol for n in numbers)


def assert_same_facts(text: str, body: dict, *, volatile: str | None = None) -> None:
    """Every number and hash prefix in `text` is in the JSON `body` (paths, timestamps and `volatile` matches aside)."""
    assert text.strip(), 'no text to compare'
    strings: set = set()
    numbers: list = []
    _flatten(body, strings, numbers)
    rest = re.sub(r'\S*/\S*', ' ', text)                 # paths: each run writes its own
    rest = TIMESTAMP.sub(' ', rest)
    if volatile:
        rest = re.sub(volatile, ' ', rest)
    for s in sorted((s for s in strings if len(s) >= 2), key=len, reverse=True):   # names, refs, details: whole words only
        rest = re.sub(rf'(?<![\w.]){re.escape(s)}(?![\w.])', ' ', rest)
    for h in HEX.findall(rest):                          # sha256 1a2b3c4d5e6f…: a prefix of a hash in the JSON
        assert any(s.startswith(h) for s in strings), f'{h!r} from the text is not in the JSON'
        rest = rest.replace(h, ' ')
    missing = [t for t in NUMBER.findall(rest) if not _close(t, numbers)]
    assert not missing, f'numbers in the text but not in the JSON: {missing}\ntext:\n{text}'


def twice(run, *args: str, code: int = 0):
    """The text and the JSON of one command (run twice: without and with --json)."""
    text, js = run(*args), run(*args, '--json')
    assert (text.code, js.code) == (code, code), (text.err, js.err)
    return text.out, js.json()


def test_the_checker_catches_a_missing_fact():
    assert_same_facts('3 rows, median 0.1235, sha256 abcdef012345…', {'rows': 3, 'm': 0.123456, 'h': 'abcdef0123456789'})
    with pytest.raises(AssertionError, match='37'):
        assert_same_facts('37 rows failed range on age', {'checks': [{'column': 'age', 'failed_rows': 36}]})
    with pytest.raises(AssertionError, match='deadbeef'):
        assert_same_facts('sha256 deadbeef00…', {'sha256': 'abcdef0123456789'})


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A folder with two credit batches (one drifted, one dirty), a contract, and a workspace holding one dataset."""
    d = tmp_path_factory.mktemp('facts')
    run = lambda *a: run_mlwork(*a, cwd=d)  # noqa: E731
    for args in (['init', '--home', 'ws'],
                 ['datasets', 'export', 'credit', 'a.parquet', '--rows', '2000', '--seed', '1'],
                 ['datasets', 'export', 'credit', 'c.parquet', '--rows', '2000', '--seed', '3', '--drift', 'income:1.0'],
                 ['datasets', 'export', 'credit', 'dirty.parquet', '--rows', '2000', '--seed', '2', '--corrupt', '0.02'],
                 ['contract', 'infer', 'a.parquet', '-o', 'credit.yaml', '--key', 'id'],
                 ['ingest', 'credit', 'a.parquet', '--home', 'ws'],
                 ['profile', 'a.parquet', '--out', 'a.bin'], ['profile', 'c.parquet', '--out', 'c.bin']):
        r = run(*args)
        assert r.code == 0, (args, r.err)
    return d


@pytest.fixture
def run(ws):
    return lambda *a: run_mlwork(*a, cwd=ws)


def test_init(run, tmp_path):
    out, body = twice(run, 'init', '--home', 'ws')
    assert_same_facts(out, body)
    assert body['root'] in out and all(u in out for u in body['stores'].values())


def test_datasets_list_show_export(run):
    for args in (['datasets', 'list'], ['datasets', 'show', 'fraud']):
        out, body = twice(run, *args)
        assert_same_facts(out, body)
    text, js = run('datasets', 'export', 'fraud', 'f1.csv', '--rows', '777'), run('datasets', 'export', 'fraud', 'f2.csv', '--rows', '777', '--json')
    assert text.code == js.code == 0, (text.err, js.err)
    assert_same_facts(text.out, js.json())
    assert '777 rows' in text.out and js.json()['rows'] == 777


def test_ingest_and_history(run, ws):
    shutil.copytree(ws / 'ws', ws / 'ws2')
    text = run('ingest', 'more', 'c.parquet', '--home', 'ws', '--message', 'second')
    js = run('ingest', 'more', 'c.parquet', '--home', 'ws2', '--message', 'second', '--json')
    assert text.code == js.code == 0, (text.err, js.err)
    assert_same_facts(text.out, js.json())
    assert text.out.startswith(f"{js.json()['ref']}: ")
    out, body = twice(run, 'history', 'credit', '--home', 'ws')
    assert_same_facts(out, body)


def test_contract_infer(run):
    out, body = twice(run, 'contract', 'infer', 'credit@0', '-o', 'again.yaml', '--home', 'ws', '--overwrite')
    assert_same_facts(out, body)
    assert body['name'] == 'again' and f"{body['columns']} columns" in out and body['source'] == 'credit@0'


def test_validate_carries_every_failed_check(run):
    out, body = twice(run, 'validate', 'dirty.parquet', '--contract', 'credit.yaml', code=1)
    assert_same_facts(out, body)
    failed = [c for c in body['checks'] if not c['passed']]
    assert failed and len(out.splitlines()) == 1 + len(failed)
    for c in failed:     # "6 rows failed range on loan_amount": check, column and count are in the JSON
        assert any(c['check'] in line and (c['column'] or '') in line and str(c['failed_rows'] or '') in line
                   for line in out.splitlines()[1:]), c


def test_validate_into_a_dataset(run, ws):
    shutil.copytree(ws / 'ws', ws / 'ws3')
    text = run('validate', 'dirty.parquet', '--contract', 'credit.yaml', '--dataset', 'credit', '--home', 'ws')
    js = run('validate', 'dirty.parquet', '--contract', 'credit.yaml', '--dataset', 'credit', '--home', 'ws3', '--json')
    assert text.code == js.code == 1, (text.err, js.err)
    body = js.json()
    assert_same_facts(text.out, body)
    assert body['quarantine_version'] in text.out and 'blocked' in text.out


def test_profile(run):
    out, body = twice(run, 'profile', 'credit', '--home', 'ws')
    assert_same_facts(out, body, volatile=r'median \S+')  # quantile sketches are randomised: each run's median differs a little
    assert all(r['column'] in out for r in body['summary'])
    assert out.count('median') == sum(r['p50'] is not None for r in body['summary'])


def test_drift(run):
    out, body = twice(run, 'drift', 'a.parquet', 'c.parquet', '--top', '50', code=3)
    assert_same_facts(out, body)
    assert 'income' in body['drifted'] and f"{len(body['drifted'])} of {len(body['columns'])} columns" in out
    assert body['skipped_key_columns'] == ['id'] and 'skipped id-like columns: id' in out
    out, body = twice(run, 'drift', 'a.bin', 'c.bin', '--columns', 'income', 'age', code=3)
    assert_same_facts(out, body)


def test_audit_verify(run):
    out, body = twice(run, 'audit', 'verify', '--home', 'ws')
    assert_same_facts(out, body)
    assert f"{body['entries']} entries" in out


@pytest.fixture(scope='module')
def registry(ws):
    """Two copies of a workspace holding a model with a champion (v1) and a challenger (v2): reg_b is a copy of reg_a
    (a copied workspace reads its own artifacts, so what one command changes in reg_a is not seen in reg_b)."""
    home = 'reg_a'
    for args in (['init', '--home', home],
                 ['train', 'a.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '20',
                  '--register', 'credit', '--alias', 'champion', '--home', home],
                 ['train', 'a.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '20', '--seed', '1',
                  '--param', 'num_leaves=7', '--register', 'credit', '--alias', 'challenger', '--home', home]):
        r = run_mlwork(*args, cwd=ws)
        assert r.code == 0, (args, r.err)
    shutil.copytree(ws / 'reg_a', ws / 'reg_b')
    return ws


def test_train(run, registry):
    args = ['train', 'a.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '20', '--register', 'credit']
    text, js = run(*args, '--home', 'reg_a'), run(*args, '--home', 'reg_b', '--json')
    assert text.code == js.code == 0, (text.err, js.err)
    body = js.json()
    assert_same_facts(text.out, body, volatile=r'\d+\.\d s\b')
    assert f"registered credit version {body['registered']['version']}" in text.out


def test_models_read_commands(run, registry):
    for args in (['list'], ['show', 'credit'], ['show', 'credit', 'challenger'], ['compare', 'credit'],
                 ['verify', 'credit', '2'], ['history', 'credit', '--alias', 'challenger'],
                 ['repair', '--dry-run', '--older-than', '0', '--reason', 'check']):
        out, body = twice(run, 'models', *args, '--home', 'reg_a')
        assert_same_facts(out, body)


def test_models_promote_rollback_card(run, registry):
    out, body = twice(run, 'models', 'promote', 'credit', '2', '--reason', 'better', '--home', 'reg_a')
    assert_same_facts(out, body)
    assert body['version'] == 2 and 'champion' in body['aliases'] and body['alias'] == 'champion'
    assert run('models', 'promote', 'credit', '2', '--reason', 'better', '--home', 'reg_b').code == 0
    text = run('models', 'rollback', 'credit', '--reason', 'drill', '--home', 'reg_a')
    js = run('models', 'rollback', 'credit', '--reason', 'drill', '--home', 'reg_b', '--json')
    assert text.code == js.code == 0, (text.err, js.err)
    assert_same_facts(text.out, js.json())
    assert js.json()['version'] == 1 and 'version 1 is champion again' in text.out
    out, body = twice(run, 'models', 'card', 'credit', '--out', 'card', '--home', 'reg_a')
    assert_same_facts(out, body)
    assert all(body[k] in out for k in ('html', 'markdown', 'json') if k in body)
