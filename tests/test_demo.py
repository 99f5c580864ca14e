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

    # data: versions, validation, quarantine, lineage and profiles are really in the workspace
    from mlwork.core import open_workspace
    from mlwork.data.profile import Profile
    from mlwork.data.store import DatasetStore
    ws = open_workspace(res['workspace'])
    store = DatasetStore.from_workspace(ws)
    assert store.version('acs') == 3 and store.version('acs_labels') == 3
    assert man['outputs']['versions'] == {'raw': 'credit_raw@0', 'valid': 'credit@1', 'quarantine': 'credit__quarantine@0'}
    raw, quarantine = store.read('credit_raw'), store.read('credit__quarantine')
    reference_rows = store.read('credit', version=0).height                 # the reference is still there
    added = store.read('credit', version=1).height - reference_rows           # version 1 appended the valid rows
    assert reference_rows == 20_000 and raw.height == added + quarantine.height == 20_000   # nothing dropped
    assert set(quarantine['id'].cast(pl.Int64)) <= set(raw['id'])
    recall = man['summary']['data']['recall']
    assert recall and all(r['injected'] == r['in_quarantine'] == r['with_reason_on_that_column'] for r in recall)
    assert sum(r['injected'] for r in recall) == man['summary']['credit']['corrupt_rows']
    assert [r['inputs'] for r in store.lineage('credit', 1)] == [['credit_raw@0']]
    for path in man['outputs']['profiles']:
        assert Profile.load(path).n_rows > 0
    assert 'severity:' in Path(man['outputs']['contract']).read_text()
    # drift: the injected income drift of the credit batch is flagged by the detector
    assert 'income' in man['summary']['drift']['credit_drifted']
    assert set(man['summary']['drift']['acs_windows']) == {'2016', '2017', '2018'}
    # the joint distribution of 2018 against 2015: both multivariate tests ran; the classifier names what separates them
    multi = {r['test']: r for r in man['summary']['drift']['multivariate']}
    assert set(multi) == {'domain_classifier', 'mmd'} and 0 <= multi['mmd']['p-value'] <= 1
    assert 0.5 < multi['domain_classifier']['statistic'] < 1 and len(multi['domain_classifier']['top_features']) == 3
    # the credit batch from profiles alone: close to the exact KS, same decisions, income flagged
    prof = man['summary']['drift']['from_profiles']
    assert prof['decisions_agree'] and prof['max_ks_difference'] < 0.0055 and 'income' in prof['drifted']

    doc = report.read_text()
    assert doc.startswith('<!DOCTYPE html>') and doc.count('<svg') >= 2
    for heading in ('ACS employment data (real)', 'Synthetic credit batch (known faults)', 'Versioned data',
                    'Validation and quarantine', 'Every injected corrupt row is in quarantine', 'Profiles', 'Drift', 'Reproduce this run'):
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

