"""`mlwork demo`, the main job, end to end through the real executable."""
from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl


def test_demo_end_to_end(cli, tmp_path):
    r = cli('demo', '--rows', '20000', '--seed', '3', '--json', '--log-format', 'json')
    assert r.code == 0, r.err
    res = r.json()
    report, manifest = Path(res['report']), Path(res['manifest'])
    assert report.parent == tmp_path / 'reports' and report.name == f"{res['run_id']}.html"
    assert Path(res['workspace']).parent == tmp_path / 'mlwork-demo'
    assert (Path(res['workspace']) / 'mlwork.toml').exists()

    # logs on stderr are JSON lines, one object each (what a log collector reads)
    logs = [json.loads(line) for line in r.err.splitlines() if line.strip()]
    assert any(l['msg'] == 'demo finished' for l in logs) and all(l['logger'].startswith('mlwork') for l in logs)

    man = json.loads(manifest.read_text())
    assert man['parameters'] == {'rows': 20000, 'seed': 3}
    assert man['summary']['acs']['reference_rows'] == 68_785
    assert man['summary']['acs']['window_rows'] == {'2016': 69_126, '2017': 69_635, '2018': 70_131}
    batch = pl.read_parquet(man['inputs']['credit']['path'])
    assert batch.height == 20_000 and man['summary']['credit']['rows'] == 20_000

    doc = report.read_text()
    assert doc.startswith('<!DOCTYPE html>') and doc.count('<svg') >= 2
    for heading in ('ACS employment data (real)', 'Synthetic credit batch (known faults)', 'Reproduce this run'):
        assert heading in doc
    # the numbers the report shows are the data's: rows per survey year
    for n in ('68,785', '69,126', '69,635', '70,131'):
        assert n in doc
    # self-contained: no scripts, nothing fetched
    assert '<script' not in doc and not re.search(r'(src|href)="https?://', doc)
    # PII values never reach the report
    for col in ('email', 'phone', 'card_number'):
        assert not any(v in doc for v in batch[col].drop_nulls().head(500).cast(pl.String))
    assert len(doc) < 2_000_000


def test_demo_twice_gives_two_runs(cli, tmp_path):
    a = cli('demo', '--rows', '2000', '--json').json()
    b = cli('demo', '--rows', '2000', '--json').json()
    assert a['run_id'] != b['run_id'] and Path(a['report']).exists() and Path(b['report']).exists()


def test_demo_refuses_a_used_workspace(cli, tmp_path):
    (tmp_path / 'ws').mkdir()
    (tmp_path / 'ws' / 'keep.txt').write_text('x')
    r = cli('demo', '--workspace', 'ws', '--rows', '2000')
    assert r.code == 2 and 'must be a new or empty folder' in r.err and 'Traceback' not in r.err
    assert (tmp_path / 'ws' / 'keep.txt').read_text() == 'x'
