"""`mlwork demo`, the main job, end to end through the real executable: every step a papermill run, one index."""
from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

FULL = ['ingest', 'train', 'promote', 'ingest', 'score', 'validate', 'profile', 'drift', 'train', 'evaluate', 'promote',
        'cycle', 'score', 'ingest', 'score', 'monitor', 'retrain', 'monitor', 'audit', 'showcase']


def _manifests(res: dict) -> list[dict]:
    return [json.loads(Path(r['manifest']).read_text()) for r in res['runs']]


def _check_index(res: dict, reports: Path) -> str:
    "Every run's report, notebook and manifest exist and the index links them (relative links, no server needed)."
    index = Path(res['index'])
    assert index == reports / 'index.html' and res['report'] == res['index']
    doc = index.read_text()
    for r in res['runs']:
        folder = reports / r['run_id']
        assert Path(r['report']) == folder / 'report.html' and Path(r['manifest']) == folder / 'manifest.json'
        for f in ('report.html', 'notebook.ipynb', 'manifest.json'):
            assert (folder / f).exists() and f'href="{r["run_id"]}/{f}"' in doc
    return doc


def test_demo_end_to_end(cli, tmp_path):
    r = cli('demo', '--rows', '20000', '--seed', '3', '--json', '--log-format', 'json')
    assert r.code == 0, r.err
    res = r.json()
    assert res['ok'] and not res['skipped'] and (res['rows'], res['seed'], res['quick']) == (20000, 3, False)
    assert [x['pipeline'] for x in res['runs']] == FULL and all(x['status'] == 'succeeded' for x in res['runs'])
    assert Path(res['workspace']).parent == tmp_path / 'mlwork-demo' and (Path(res['workspace']) / 'mlwork.toml').exists()
    _check_index(res, tmp_path / 'reports')

    # logs on stderr are JSON lines, one object each (what a log collector reads)
    lines = [line for line in r.err.splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith('{')]
    assert not not_json, f'lines on stderr that are not JSON: {not_json[:5]}'
    logs = [json.loads(line) for line in lines]
    assert any(l['msg'] == 'demo finished' for l in logs) and all(l['logger'].startswith('mlwork') for l in logs)

    mans = _manifests(res)
    by = lambda name: [m for m in mans if m['pipeline']['name'] == name]
    assert all(m['status'] == 'succeeded' and m['parameters']['home'] == str(Path(res['workspace']).resolve()) for m in mans)
    assert [m['parameters']['year'] for m in by('ingest')] == [2015, 2016, 2018] and [m['parameters']['year'] for m in by('cycle')] == [2017]
    assert all(m['parameters']['seed'] == 3 for m in mans if 'seed' in m['parameters'])

    # data: the four ACS years are versions, features and labels apart, each window the rows it added
    from mlwork.core import open_workspace
    from mlwork.data.profile import Profile
    from mlwork.data.store import DatasetStore
    from mlwork.models.registry import Registry
    ws = open_workspace(res['workspace'])
    store = DatasetStore.from_workspace(ws)
    assert store.version('acs') == 3 and store.version('acs_labels') == 3
    assert [store.read('acs', version=0).height] + [store.read(f'acs#{v}').height for v in (1, 2, 3)] == [68_785, 69_126, 69_635, 70_131]
    assert [m['metrics']['rows'] for m in by('ingest')] == [68_785, 69_126, 70_131]
    assert by('validate')[0]['inputs'][0]['version'] == 1 and by('validate')[0]['metrics']['valid_rows'] == 69_126
    for m in by('profile') + by('cycle'):      # the profiles the runs stored
        assert Profile.load(m['outputs']['profile']).n_rows > 0
    # drift: 2016 against 2015 in the drift run, and each later year in its cycle
    assert by('drift')[0]['metrics']['columns_changed'] > 0 and all(m['metrics']['columns_changed'] > 0 for m in by('cycle'))

    # models: one registered version per train, cycle and retrain; the champion is where the last alias move put it
    reg = Registry(ws)
    written = [w['version'] for m in mans for w in m['models']['written']]
    assert written == [1, 2, 3, 4] and reg.show('acs_employment', 4).version == 4
    moves = [a for m in mans for a in m['aliases'] if a['alias'] == 'champion']
    assert moves[0] == {'model': 'acs_employment', 'alias': 'champion', 'from': None, 'to': 1}
    assert reg.show('acs_employment', 'champion').version == moves[-1]['to']
    assert [d['what'] for d in by('evaluate')[0]['decisions']] and by('promote')[1]['decisions'][0]['what'] == 'promotion gate'

    # serving: each production window scored through the real HTTP service, every row in the prediction log, labels back
    from mlwork.serve.predlog import read_feedback, read_predictions
    scores = by('score')
    assert [m['inputs'][0]['version'] for m in scores] == [1, 2, 3]
    assert [m['metrics']['rows'] for m in scores] == [69_126, 69_635, 70_131]
    assert all(m['metrics']['logged_rows'] == m['metrics']['rows'] and m['metrics']['max_abs_diff_vs_in_process'] < 1e-9 for m in scores)
    assert all(0 < m['metrics']['feedback_sent'] <= m['metrics']['rows'] for m in scores)
    logged = read_predictions(ws, 'acs_employment')
    assert logged.height >= 69_126 + 69_635 + 70_131 and logged['request_id'].n_unique() == logged.height
    canary = by('retrain')[0]['metrics']
    assert logged.height == sum(m['metrics']['rows'] for m in scores) + canary['canary_rows']
    assert read_feedback(ws, 'acs_employment').height == sum(m['metrics']['feedback_sent'] for m in scores) + canary['canary_feedback']

    # the showcase: the credit batch, its validation scored against the truth, drift, estimates, tampering
    show = by('showcase')[0]
    assert show['parameters']['rows'] == 20000 and show['parameters']['seed'] == 3
    folder = Path(show['report_dir'])
    summary = json.loads((folder / show['outputs']['summary']).read_text())
    sec = summary['sections']
    batch = pl.read_parquet(folder / show['outputs']['credit_batch'])
    assert batch.height == 20_000 and sec['credit']['rows'] == 20_000
    assert sec['data']['versions'] == {'raw': 'credit_raw@0', 'valid': 'credit@1', 'quarantine': 'credit__quarantine@0'}
    raw, quarantine = store.read('credit_raw'), store.read('credit__quarantine')
    reference_rows = store.read('credit', version=0).height                 # the reference is still there
    added = store.read('credit', version=1).height - reference_rows           # version 1 appended the valid rows
    assert reference_rows == 20_000 and raw.height == added + quarantine.height == 20_000   # nothing dropped
    assert set(quarantine['id'].cast(pl.Int64)) <= set(raw['id'])
    recall = sec['data']['recall']
    assert recall and all(x['injected'] == x['in_quarantine'] == x['with_reason_on_that_column'] for x in recall)
    assert sum(x['injected'] for x in recall) == sec['credit']['corrupt_rows'] == show['metrics']['corrupt_rows_quarantined']
    assert {'what': 'quarantine recall', 'decision': 'complete'}.items() <= show['decisions'][0].items()
    assert [x['inputs'] for x in store.lineage('credit', 1)] == [['credit_raw@0']]
    assert 'severity:' in Path(show['outputs']['contract']).read_text()
    # drift: the injected income drift of the credit batch is flagged, exactly and from the profiles alone
    assert 'income' in sec['credit_drift']['drifted']
    prof = sec['credit_drift']['from_profiles']
    assert prof['decisions_agree'] and prof['max_ks_difference'] < 0.0055 and 'income' in prof['drifted']
    # the joint distribution of 2018 against 2015: both multivariate tests ran; the classifier names what separates them
    multi = {x['test']: x for x in sec['multivariate']['tests']}
    assert set(multi) == {'domain_classifier', 'mmd'} and 0 <= multi['mmd']['p-value'] <= 1 and '2018' in sec['multivariate']['window']
    assert 0.5 < multi['domain_classifier']['statistic'] < 1 and len(multi['domain_classifier']['top_features']) == 3
    # time-ordered: iid tests alarm before the change, the reference-variation rule does not as much, and fires after it
    t = sec['time_ordered']
    assert t['iid']['before'] > t['reference']['before'] and t['reference']['after'] > 0
    # label-free estimates of the champion for every production year, near the realised values
    est = [x for x in sec['estimates']['rows'] if x['metric'] == 'roc_auc']
    assert sorted(x['window'] for x in est) == ['2016', '2017', '2018'] and all(abs(x['estimate'] - x['realised']) < 0.03 for x in est)
    assert sec['estimates']['version'] == reg.show('acs_employment', 'champion').version
    # a changed model file is refused; restored, it verifies; the audit log is intact
    assert sec['tamper']['refused'] and sec['tamper']['audit_ok'] and reg.verify('acs_employment', 'champion')
    # personal data: found in the credit batch, left out of the model trained on it, pseudonymised before the log
    pc = sec['privacy']
    assert set(pc['found']) == set(pc['excluded']) == {'name', 'email', 'phone', 'card_number'}
    assert pc['logged_rows'] == 5_000 and pc['pii_in_log'] == {} and pc['raw_keys'] == 0 and pc['files_with_raw_email'] == 0
    credit_log = read_predictions(ws, pc['model'])
    assert credit_log.height == 5_000 and credit_log['entity_key'].str.len_chars().min() >= 16
    assert not set(credit_log['entity_key']) & set(batch['email'].head(5_000))
    assert 'name' not in reg.load(pc['model'], pc['version']).features

    # monitoring: the metric table holds every served version's performance and drift; the first monitor run saw the
    # 2018 traffic of the champion trained up to 2017 and fired; the retrain answered the open drift incident (gate,
    # a 30 % canary through the service, promotion: all in the index); the second run judged the version that took
    # over and the incident resolved; the webhook receiver the demo started got both messages, in order
    from mlwork.monitor.metrics import read_metrics
    first, second = by('monitor')
    metrics = read_metrics(ws, 'acs_employment')
    served = set(logged['version'])
    assert served == {1, 3, 4} and set(metrics.filter(pl.col('kind') == 'performance')['version']) == served
    assert set(metrics.filter(pl.col('kind') == 'drift')['version']) == served and 'cost' in set(metrics['kind'])
    assert set(metrics['window'].drop_nulls().str.slice(0, 5)) == {'rows '}  # the demo's windows: 20,000 predictions
    alerts = lambda m: [(d['decision'], d['why']) for d in m['decisions'] if d['what'] == 'alert inputs-moved']
    (fired, why_fired), = alerts(first)
    assert fired == 'firing' and '(version 3, arm champion)' in why_fired
    decisions = {d['what']: d for d in by('retrain')[0]['decisions']}
    assert decisions['decide']['decision'] == 'retrain' and '1 open drift incident(s) (inputs-moved)' in decisions['decide']['why']
    assert decisions['canary']['decision'] == 'ended' and decisions['promotion']['decision'] == 'promoted'
    assert 'rollout canary at 30 %' in next(d['why'] for d in by('retrain')[0]['decisions'] if d['decision'] == 'started')
    assert reg.show('acs_employment', 'champion').version == 4 and by('retrain')[0]['metrics']['champion_version'] == 4
    (resolved, why_resolved), = alerts(second)
    assert resolved == 'resolved' and 'version 4' in why_resolved and 'version 3, on which it opened, no longer serves' in why_resolved
    received = [json.loads(line) for line in Path(res['alerts']).read_text().splitlines()]
    assert [(r['alert']['status'], r['text']) for r in received] == [('firing', why_fired), ('resolved', why_resolved)]
    assert received[0]['alert']['incident_id'] == received[1]['alert']['incident_id']
    index_doc = Path(res['index']).read_text()
    assert all(w in index_doc for w in ('rollout canary at 30 %', 'canary verdict', 'champion 3 → 4', 'inputs-moved resolved'))

    # the fairness audit of the final champion: intervals, a verdict, the gap explained, two mitigations, stored
    from mlwork.models.audits import model_audits
    audit_run = by('audit')[0]
    champion_v = reg.show('acs_employment', 'champion').version
    stored = model_audits(ws, 'acs_employment', champion_v)
    assert len(stored) == 1 and stored[0].verdict in ('passed', 'failed', 'undetermined') and stored[0].run_id == audit_run['run_id']
    full_audit = json.loads((Path(audit_run['report_dir']) / audit_run['outputs']['audit']).read_text())
    s = full_audit['summary']
    assert {r['attribute'] for r in s['rules']} == {'SEX', 'RAC1P', 'DIS', 'SEX × RAC1P'} and s['n_boot'] == 1000
    assert all(r['lower'] <= r['value'] <= r['upper'] for r in s['rules'] if r['value'] is not None and r['lower'] is not None)
    assert s['mitigation']['tradeoff']['disparity_after'] < s['mitigation']['tradeoff']['disparity_before']
    assert s['reweighing']['disparity_after'] < s['reweighing']['disparity_before'] and s['gap_features']
    audit_doc = (Path(audit_run['report_dir']) / 'report.html').read_text()
    for heading in ('The verdict', 'Who is affected', 'Why: which inputs drive the gap', 'Mitigation 1', 'Mitigation 2'):
        assert heading in audit_doc

    doc = (folder / 'report.html').read_text()
    assert doc.lstrip().startswith('<!DOCTYPE html>') and doc.count('<svg') >= 2
    for heading in ('A credit batch with known faults', 'Validation and quarantine', 'Drift of the joint distribution',
                    'from profiles alone', 'Time-ordered data', 'Performance without labels', 'A tampered model is refused',
                    'Personal data'):
        assert heading in doc
    # nothing fetched from the network
    assert not re.search(r'(src|href)="https?://', doc)
    # PII values never reach the report
    for col in ('email', 'phone', 'card_number'):
        assert not any(v in doc for v in batch[col].drop_nulls().head(500).cast(pl.String))


def test_demo_quick(cli, tmp_path):
    r = cli('demo', '--quick', '--reports', 'out')
    assert r.code == 0, r.err
    # each run's line as it finishes, then the index
    lines = r.out.splitlines()
    assert [l.split()[2] for l in lines[:5]] == ['ingest', 'train', 'promote', 'score', 'cycle'] and lines[0].startswith('[ 1/5]')
    assert all(' succeeded ' in l and l.endswith('/report.html') for l in lines[:5])
    index = tmp_path / 'out' / 'index.html'
    assert f'index:     {index}' in r.out and index.exists()
    runs = sorted(p.name for p in (tmp_path / 'out').iterdir() if p.is_dir())
    assert [n.split('-')[0] for n in runs] == ['cycle', 'ingest', 'promote', 'score', 'train']
    doc = index.read_text()
    assert all(f'href="{n}/report.html"' in doc for n in runs)
    cycle = json.loads((tmp_path / 'out' / [n for n in runs if n.startswith('cycle')][0] / 'manifest.json').read_text())
    assert cycle['status'] == 'succeeded' and cycle['parameters']['year'] == 2016
    assert {a['alias'] for a in cycle['aliases']} >= {'challenger'}


def test_demo_twice_gives_two_runs(tmp_path):
    from mlwork.demo import DemoStep, run_demo
    step = [DemoStep('ingest', {'year': 2015})]
    a = run_demo(tmp_path / 'a', tmp_path / 'reports', steps=step)
    b = run_demo(tmp_path / 'b', tmp_path / 'reports', steps=step)
    assert a.ok and b.ok and a.demo_id != b.demo_id and a.runs[0]['run_id'] != b.runs[0]['run_id']
    assert Path(a.runs[0]['report']).exists() and Path(b.runs[0]['report']).exists()
    _check_index(b.to_dict(), tmp_path / 'reports')


def test_demo_refuses_a_used_workspace(cli, tmp_path):
    (tmp_path / 'ws').mkdir()
    (tmp_path / 'ws' / 'keep.txt').write_text('x')
    r = cli('demo', '--workspace', 'ws', '--rows', '2000')
    assert r.code == 2 and 'must be a new or empty folder' in r.err and 'Traceback' not in r.err
    assert (tmp_path / 'ws' / 'keep.txt').read_text() == 'x'
    assert not (tmp_path / 'reports').exists() or not any((tmp_path / 'reports').iterdir())
