"""The retraining loop: the policy file and its typos, the decision to retrain on crafted monitoring frames, the canary
verdict on a crafted prediction log, and the `retrain` pipeline end to end on a small ACS workspace through the real
scoring service (a forced failure first, which must leave everything serving as it was; then a canary and a promotion)."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from mlwork.core import ConfigError, NotFound
from mlwork.pipelines.retrain import (Canary, DriftTrigger, PerformanceTrigger, RetrainPolicy, Triggers, canary_verdict,
                                      retrain_decision)

T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------- the policy

def _load(tmp_path: Path, text: str) -> RetrainPolicy:
    p = tmp_path / 'policy.yaml'
    p.write_text(text)
    return RetrainPolicy.load(p)


def test_policy_full_file(tmp_path):
    pol = _load(tmp_path, """
triggers:
  drift: {metric: psi, threshold: 0.2, min_features: 2, incidents: false}
  performance: {metric: log_loss, source: estimated, drop: 0.1, relative: true}
  min_new_rows: 5000
  max_age_days: 90
judge:
  data: acs@3
  labels: acs_labels@3
  metric: pr_auc
  margin: 0.01
  n_boot: 300
  fairness: {attribute: RAC1P, disparity: equalized_odds_difference, max_worsening: 0.03}
canary: {percent: 5, min_rows: 1000, metric: accuracy, max_drop: 0.01}
""")
    t, j, c = pol.triggers, pol.judge, pol.canary
    assert (t.drift.metric, t.drift.threshold, t.drift.min_features, t.drift.incidents) == ('psi', 0.2, 2, False)
    assert (t.performance.metric, t.performance.source, t.performance.relative) == ('log_loss', 'estimated', True)
    assert (t.min_new_rows, t.max_age_days) == (5000, 90.0)
    assert (j.data, j.labels, j.metric, j.margin, j.n_boot) == ('acs@3', 'acs_labels@3', 'pr_auc', 0.01, 300)
    assert (j.fairness.attribute, j.fairness.disparity, j.fairness.max_worsening) == ('RAC1P', 'equalized_odds_difference', 0.03)
    assert (c.percent, c.min_rows, c.metric, c.max_drop) == (5.0, 1000, 'accuracy', 0.01)
    assert RetrainPolicy.from_dict(pol.to_dict()).to_dict() == pol.to_dict()
    assert _load(tmp_path, '').to_dict() == RetrainPolicy().to_dict()  # an empty file: the defaults
    off = _load(tmp_path, 'triggers:\n  drift: null\n  performance: false\n')
    assert off.triggers.drift is None and off.triggers.performance is None


@pytest.mark.parametrize('text, where', [
    ('triggers:\n  drift:\n    metric: drifted\n  max_age_day: 30\n', "line 4: `triggers` has an unknown key 'max_age_day'"),
    ('judge:\n  margin: 0.01\n  fairnes:\n    attribute: SEX\n', "line 3: `judge` has an unknown key 'fairnes'"),
    ('canary:\n  percent: 10\n  metric: f1\n', 'line 3: `canary.metric` must be one of roc_auc, accuracy, log_loss, brier'),
    ('canary:\n  percent: 0\n', 'line 2: `canary.percent` must be in (0, 100]'),
    ('canary:\n  percent: 150\n', 'line 2: `canary.percent` must be in (0, 100]'),
    ('triggers:\n  min_new_rows: -5\n', 'line 2: `triggers.min_new_rows` must be a whole number'),
    ('triggers:\n  min_new_rows: 10.5\n', 'line 2: `triggers.min_new_rows` must be a whole number'),
    ('judge:\n  margin: abc\n', "line 2: `judge.margin` must be a number ≥ 0; found 'abc'"),
    ('judge:\n  fairness:\n    disparity: demographic_parity_difference\n', 'line 2: `judge.fairness` needs an `attribute`'),
    ('judge:\n  fairness: {attribute: SEX, disparity: parity}\n', '`judge.fairness.disparity` must be one of'),
    ('triggers:\n  performance:\n    source: guessed\n', 'line 3: `triggers.performance.source` must be one of realised'),
    ('triggers:\n  drift:\n    incidents: yes please\n', 'line 3: `triggers.drift.incidents` must be true or false'),
    ('canary:\n  percent: 10\n  percent: 20\n', "line 3: the key 'percent' is given twice"),
    ('retrain:\n  now: true\n', "line 1: `policy` has an unknown key 'retrain'"),
    ('triggers: [drift]\n', 'line 1: `triggers` must be a mapping'),
    ('canary:\n  percent: [10\n', 'not valid YAML'),
])
def test_policy_errors_name_file_and_line(tmp_path, text, where):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert str(tmp_path / 'policy.yaml') in str(e.value) and where in str(e.value), str(e.value)


def test_policy_missing_file(tmp_path):
    with pytest.raises(NotFound, match='does not exist'):
        RetrainPolicy.load(tmp_path / 'nope.yaml')


# ---------------------------------------------------------------- the decision

def _metrics(rows) -> pl.DataFrame:
    "Monitoring rows in the SPEC16 columns: (day, version, arm, kind, metric, group, value)."
    return pl.DataFrame([{'run_id': 'r', 'model': 'm', 'version': v, 'arm': a, 'window_start': T0 + timedelta(days=d),
                          'window_end': T0 + timedelta(days=d + 1), 'window': f'day {d}', 'kind': k, 'metric': m,
                          'group': g, 'value': x, 'lower': None, 'upper': None, 'n': 100,
                          'computed_at': T0} for d, v, a, k, m, g, x in rows],
                        schema_overrides={'lower': pl.Float64, 'upper': pl.Float64})


def test_decision_drift_only_the_latest_window_of_the_champion():
    m = _metrics([(0, 1, 'champion', 'drift', 'psi', 'AGEP', 0.5),  # an old alarm: not the latest window
                  (1, 1, 'champion', 'drift', 'psi', 'AGEP', 0.19),  # just under PSI 0.2
                  (1, 1, 'champion', 'drift', 'p_value', 'AGEP', 0.9),  # another metric
                  (1, 2, 'champion', 'drift', 'psi', 'SCHL', 0.2),  # another version's alarm
                  (1, 1, 'challenger', 'drift', 'psi', 'MAR', 1.0)])  # the other arm
    d = retrain_decision(RetrainPolicy(), metrics=m, version=1)
    assert not d.retrain and d.fired == [] and d.window == 'day 1'
    assert '0 feature(s) flagged' in d.why
    d = retrain_decision(RetrainPolicy(), metrics=m, version=2)
    assert d.retrain and d.fired == ['drift'] and 'SCHL' in d.why


def test_decision_drift_needs_min_features_and_counts_incidents():
    m = _metrics([(0, 1, 'champion', 'drift', 'psi', f, 0.4) for f in ('AGEP', 'SCHL')]
                 + [(0, 1, 'champion', 'prediction_drift', 'psi', 'prediction', 0.1)])
    pol = RetrainPolicy(triggers=Triggers(drift=DriftTrigger(min_features=3), performance=None))
    assert not retrain_decision(pol, metrics=m).retrain
    inc = [{'rule': 'input drift', 'metric': 'psi', 'status': 'open'}]
    d = retrain_decision(pol, metrics=m, incidents=inc)
    assert d.retrain and '1 open drift incident(s) (input drift)' in d.why
    assert retrain_decision(pol, metrics=m, incidents=[{'rule': 'agep moved', 'metric': 'effect', 'status': 'open'}]).retrain
    assert retrain_decision(pol.__class__(triggers=Triggers(drift=DriftTrigger(min_features=3, incidents=False), performance=None)),
                            metrics=m, incidents=inc).retrain is False
    resolved = [{'rule': 'input drift', 'metric': 'psi', 'status': 'resolved'},
                {'rule': 'latency p99', 'metric': 'latency_p99', 'status': 'open'}]
    assert not retrain_decision(pol, metrics=m, incidents=resolved).retrain


def test_decision_performance_absolute_relative_reference_and_estimated():
    m = _metrics([(0, 1, 'champion', 'performance', 'roc_auc', None, 0.80),
                  (3, 1, 'champion', 'performance', 'roc_auc', None, 0.77),
                  (3, 1, 'champion', 'estimated', 'roc_auc', None, 0.70)])
    perf = lambda **kw: RetrainPolicy(triggers=Triggers(drift=None, performance=PerformanceTrigger(**kw)))  # noqa: E731
    d = retrain_decision(perf(drop=0.02), metrics=m)  # realised first: 0.80 → 0.77
    assert d.retrain and d.triggers[0]['value'] == pytest.approx(0.03)
    assert 'realised roc_auc 0.7700 against 0.8000 from the first window (day 0)' in d.why
    assert not retrain_decision(perf(drop=0.05), metrics=m).retrain
    assert retrain_decision(perf(drop=0.05, source='estimated'), metrics=m).retrain is False  # no estimated reference window but itself
    d = retrain_decision(perf(drop=0.05, source='estimated'), metrics=m, reference={'roc_auc': 0.82})
    assert d.retrain and d.triggers[0]['value'] == pytest.approx(0.12)
    d = retrain_decision(perf(drop=0.05, relative=True), metrics=m, reference={'roc_auc': 0.80})
    assert not d.retrain and d.triggers[0]['value'] == pytest.approx(0.0375)  # 3.75 % of 0.80
    # lower is better for log loss: a rise is a drop
    ll = _metrics([(0, 1, 'champion', 'performance', 'log_loss', None, 0.40), (1, 1, 'champion', 'performance', 'log_loss', None, 0.50)])
    assert retrain_decision(perf(metric='log_loss', drop=0.05), metrics=ll).retrain
    assert not retrain_decision(perf(metric='log_loss', drop=0.05), metrics=ll.with_columns(pl.col('value').reverse())).retrain


def test_decision_rows_age_and_nothing():
    pol = RetrainPolicy(triggers=Triggers(drift=None, performance=None, min_new_rows=1000, max_age_days=30))
    d = retrain_decision(pol, metrics=None, new_rows=999, model_age_days=29.5)
    assert not d.retrain and [t['fired'] for t in d.triggers] == [False, False]
    assert '999 new labelled rows < 1,000' in d.why and '29.5 days old (≤ 30)' in d.why
    d = retrain_decision(pol, metrics=None, new_rows=1000, model_age_days=31)
    assert d.fired == ['new rows', 'model age']
    assert retrain_decision(pol, metrics=None).fired == []  # unknown counts never fire
    # empty monitoring: nothing to judge drift or performance on
    d = retrain_decision(RetrainPolicy(), metrics=pl.DataFrame())
    assert not d.retrain and 'no realised or estimated roc_auc in the latest monitoring window' in d.why
    assert json.loads(json.dumps(d.to_dict()))['retrain'] is False


# ---------------------------------------------------------------- the canary verdict

def _log(ws, model: str, rows: list[dict], labels: dict[str, int]) -> None:
    "Write a prediction log and its feedback with the real writer."
    import asyncio

    from mlwork.serve.predlog import PredictionLog

    async def go():
        with PredictionLog(ws, model, flush_ms=1) as log:
            await log.write(rows)
            await log.feedback([{'request_id': r, 'label': v} for r, v in labels.items()])
    asyncio.run(go())


def test_canary_verdict_on_a_written_log(tmp_path):
    from mlwork.core import init_workspace
    ws = init_workspace(tmp_path / 'ws').workspace
    rng = np.random.default_rng(1)
    rows, labels, truth = [], {}, {'champion': ([], []), 'challenger': ([], [])}
    for i in range(1200):
        arm = 'challenger' if i % 4 == 0 else 'champion'
        y = int(rng.integers(0, 2))
        p = float(np.clip((0.6 if arm == 'champion' else 0.3) * y + rng.random() * 0.7, 0, 1))
        rows.append({'request_id': f'r{i}', 'version': 2 if arm == 'challenger' else 1, 'arm': arm, 'prediction': p,
                     'latency_ms': 1.0, 'features': {'x': float(i)}, 'entity_key': str(i)})
        if i % 3:  # a third of the labels never arrive
            labels[f'r{i}'] = y
            truth[arm][0].append(y)
            truth[arm][1].append(p)
    labels['unknown-id'] = 1  # feedback for a request never logged
    _log(ws, 'm', rows, labels)
    v = canary_verdict(ws, 'm', since=None, policy=Canary(min_rows=100, metric='roc_auc', max_drop=0.02), champion=1, challenger=2)
    for arm in ('champion', 'challenger'):  # the live metric against scikit-learn on the same labelled rows
        y, p = truth[arm]
        assert v.arms[arm]['labelled'] == len(y)
        assert v.arms[arm]['roc_auc'] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert v.arms['challenger']['rows'] == 300 and v.arms['champion']['rows'] == 900
    assert v.verdict == 'roll back' and 'gain' in v.why  # the challenger's scores carry half the signal
    acc = canary_verdict(ws, 'm', since=None, policy=Canary(min_rows=100, metric='accuracy', max_drop=0.5))
    y, p = truth['champion']
    assert acc.arms['champion']['accuracy'] == pytest.approx(accuracy_score(y, (np.array(p) >= 0.5).astype(int)), abs=1e-6)
    assert acc.verdict == 'promote'
    wait = canary_verdict(ws, 'm', since=None, policy=Canary(min_rows=500))
    assert wait.verdict == 'wait' and 'challenger 200' in wait.why
    later = canary_verdict(ws, 'm', since=datetime.now(timezone.utc) + timedelta(hours=1), policy=Canary(min_rows=1))
    assert later.verdict == 'wait' and later.arms['champion']['rows'] == 0  # nothing since the canary started
    other = canary_verdict(ws, 'm', since=None, policy=Canary(min_rows=1), challenger=7)  # another version's rows left out
    assert other.arms['challenger']['rows'] == 0 and other.verdict == 'wait'


def test_canary_verdict_labels_read_as_01_latest_wins():
    pred = pl.DataFrame({'request_id': ['a', 'b', 'c', 'd'], 'ts': [T0] * 4, 'arm': ['champion'] * 2 + ['challenger'] * 2,
                         'version': [1, 1, 2, 2], 'prediction': [0.9, 0.1, 0.8, 0.2]})
    fb = pl.DataFrame({'request_id': ['a', 'b', 'c', 'd', 'd', 'a'], 'label': ['1', '0', 'true', '1', 'false', 'maybe'],
                       'ts': [T0, T0, T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]})
    v = canary_verdict(None, 'm', since=None, policy=Canary(min_rows=1, metric='accuracy'), predictions=pred, feedback=fb)
    # 'a' got an unreadable label last: dropped; 'd' was relabelled 0: the challenger is right on both
    assert v.arms['champion']['labelled'] == 1 and v.arms['challenger']['labelled'] == 2
    assert v.arms['challenger']['accuracy'] == 1.0 and v.verdict == 'promote'


# ---------------------------------------------------------------- the pipeline, end to end

pm = pytest.importorskip('papermill')
ROWS = 4000  # per survey year


@pytest.fixture(scope='module')
def acs(tmp_path_factory):
    "A small ACS workspace: 2015 and 2016 samples stored, a champion (v1) trained on 2015, a stale challenger (v2)."
    from mlwork.core import init_workspace
    from mlwork.data.store import DatasetStore
    from mlwork.datasets import load_acs, load_acs_labels
    from mlwork.evaluation.metrics import evaluate
    from mlwork.models.registry import Registry
    from mlwork.models.train import train_model
    from mlwork.pipelines.steps import labelled_rows
    root = tmp_path_factory.mktemp('retrain')
    ws = init_workspace(root / 'ws').workspace
    store, reg = DatasetStore.from_workspace(ws), Registry(ws)
    for year in (2015, 2016):
        f = load_acs(year, labels=False).sort('id').head(ROWS)
        store.ingest('acs', f, message=f'ACS {year} sample')
        store.ingest('acs_labels', load_acs_labels(year).filter(pl.col('id').is_in(f['id'].implode())), message=f'labels {year}')
        if year == 2015:
            split = labelled_rows(store.read('acs'), store.read('acs_labels'), key='id', target='employed')
            m = train_model(split.train, 'employed', exclude=['id', 'year'], num_boost_round=40, seed=0)
            perf = evaluate(split.held_out['employed'].to_numpy(), m.predict(split.held_out.select(m.features)))
            reg.publish(m, 'acs_employment', alias='champion', metrics={'roc_auc': perf.metrics['roc_auc']})
            stale = train_model(split.train, 'employed', exclude=['id', 'year'], num_boost_round=5, seed=1)
            reg.publish(stale, 'acs_employment', alias='challenger')
    policy = root / 'policy.yaml'
    policy.write_text('triggers:\n  min_new_rows: 1000\njudge:\n  margin: 0.05\n  n_boot: 100\n'
                      '  fairness: {attribute: SEX, disparity: demographic_parity_difference, max_worsening: 0.1}\n'
                      'canary: {percent: 50, min_rows: 100, metric: roc_auc, max_drop: 0.1}\n')
    return {'root': root, 'ws': ws, 'reg': reg, 'policy': str(policy)}


def _run(acs, name: str, **params):
    from mlwork.pipelines.context import RUN_DIR_ENV, read_records
    folder = acs['root'] / 'runs' / name
    folder.mkdir(parents=True)
    old = {k: os.environ.get(k) for k in (RUN_DIR_ENV, 'OMP_WAIT_POLICY')}
    os.environ[RUN_DIR_ENV], os.environ['OMP_WAIT_POLICY'] = str(folder), 'PASSIVE'
    error = None
    try:
        pm.execute_notebook(str(Path(__file__).parents[1] / 'nbs' / 'pipelines' / 'retrain.ipynb'), str(folder / 'notebook.ipynb'),
                            parameters={'home': str(acs['ws'].root), 'policy': acs['policy'], 'num_boost_round': 40, **params},
                            cwd=str(acs['root']), kernel_name='python3', progress_bar=False)
    except Exception as e:  # papermill's execution error
        error = e
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    records = read_records(folder)
    return {r['what']: r for r in records if r['kind'] == 'decision'}, records, error


def _state(acs) -> dict:
    from mlwork.serve.app import serving_state
    return serving_state(acs['ws'], acs['reg'], 'acs_employment')


def _rollouts(acs) -> list[tuple[str, float]]:
    from mlwork.audit import AuditLog
    e = AuditLog.for_workspace(acs['ws']).entries().filter(pl.col('action') == 'serve.rollout')
    return [(w['mode'], w['percent']) for w in map(json.loads, e['what'])]


@pytest.mark.timeout(600)
def test_retrain_pipeline_end_to_end(acs, monkeypatch):
    from mlwork.serve.predlog import read_predictions
    before = _state(acs)
    assert before == {'champion': 1, 'challenger': 2, 'rollout': {'mode': 'off', 'percent': 0.0}}

    # a dry run decides and changes nothing
    dec, _, err = _run(acs, 'dry', dry_run=True)
    assert err is None, err
    assert dec['decide']['decision'] == 'dry run: retrain' and '4,000 new labelled rows ≥ 1,000' in dec['decide']['why']
    assert 'train' not in dec and _state(acs) == before and len(acs['reg'].list().models['acs_employment']) == 2

    # a failure during the canary (labels that do not exist, found after the traffic was scored through the service)
    dec, _, err = _run(acs, 'fail', canary_labels='no_such_labels@latest')
    assert err is not None and 'no_such_labels' in str(err)
    assert dec['train']['decision'] == 'registered' and dec['canary']['decision'] == 'failed'
    assert 'restored: challenger 3 → 2' in dec['canary']['why']
    assert _state(acs) == before  # champion serving, challenger back on v2, rollout off
    assert _rollouts(acs)[-2:] == [('canary', 50.0), ('off', 0.0)]
    log = read_predictions(acs['ws'], 'acs_employment')
    assert set(log.filter(pl.col('arm') == 'challenger')['version']) == {3}  # the failed canary did reach v3

    # the loop, as `mlwork run retrain`: train v4, gate, fairness, canary at 50 % through the service, verdict, promotion
    from mlwork.pipelines.runs import run_pipeline
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')
    run = run_pipeline('retrain', values={'policy': acs['policy'], 'num_boost_round': 40}, home=acs['ws'].root)
    assert run.ok, run.manifest.get('error')
    man = run.manifest
    dec = {d['what']: d for d in man['decisions']}
    records = [{'kind': 'metric', 'name': k, 'value': v} for k, v in man['metrics'].items()]
    assert {'model': 'acs_employment', 'alias': 'champion', 'from': 1, 'to': 4} in man['aliases']
    assert {'model': 'acs_employment', 'alias': 'challenger', 'from': 2, 'to': 4} in man['aliases']
    assert run.report.is_file() and 'Canary verdict' in run.report.read_text()
    assert dec['train']['decision'] == 'registered' and 'version 4' in dec['train']['why']
    assert dec['promotion gate']['decision'] == 'passed'
    assert dec['fairness bound']['decision'] == 'passed' and 'demographic_parity_difference by SEX' in dec['fairness bound']['why']
    metrics = {r['name']: r['value'] for r in records if r['kind'] == 'metric'}
    assert metrics['canary_challenger_rows'] > 0 and metrics['canary_rows'] == ROWS // 5  # only the held-out rows of 2016
    assert 0.3 < metrics['canary_challenger_rows'] / metrics['canary_rows'] < 0.7  # 50 %, sticky by key
    assert metrics['canary_feedback'] == metrics['canary_rows']
    assert dec['canary verdict']['decision'] == 'promote' and 'live roc_auc' in dec['canary verdict']['why']
    assert dec['promotion']['decision'] == 'promoted' and 'champion 1 → 4' in dec['promotion']['why']
    assert _rollouts(acs)[-2:] == [('canary', 50.0), ('off', 0.0)]
    after = _state(acs)
    assert after == {'champion': 4, 'challenger': None, 'rollout': {'mode': 'off', 'percent': 0.0}}
    assert acs['reg'].history('acs_employment', 'champion')[-2:] == [1, 4]
    log = read_predictions(acs['ws'], 'acs_employment')
    canary = log.filter(pl.col('version') == 4)
    assert canary.height == metrics['canary_challenger_rows'] and set(canary['arm']) == {'challenger'}
    # sticky routing: no entity key was answered by both arms in the canary
    both = log.filter(pl.col('version').is_in([1, 4])).group_by('entity_key').agg(pl.col('arm').n_unique().alias('arms'))
    assert both['arms'].max() == 1
    assert 'the retrain of acs_employment, step by step' in run.report.read_text()

    # a failure where the challenger alias had no holder (the promotion took it away): the alias is unset again
    dec, _, err = _run(acs, 'fail-again', force=True, canary_labels='no_such_labels@latest')
    assert err is not None and dec['train']['decision'] == 'registered' and 'version 5' in dec['train']['why']
    # (the canary step put the rollout back itself; restore_serving takes the alias away)
    assert dec['canary']['decision'] == 'failed' and dec['canary']['why'].endswith('restored: challenger 5 → none (unset)')
    assert 'no_such_labels' in dec['canary']['why']
    assert _state(acs) == after and acs['reg'].history('acs_employment', 'challenger') == [2, 4]
    from mlwork.models.registry import compare_states, registry_state, replay_audit
    assert compare_states(registry_state(acs['reg']), replay_audit(acs['reg'].audit)) == []  # every change audited

    # a retrain killed outright mid-canary (SIGKILL of its kernel: no exception, nothing restored by the run itself) ...
    monkeypatch.setenv('MLWORK_KILL_AT', 'retrain.canary')
    dec, _, err = _run(acs, 'killed', force=True)
    monkeypatch.delenv('MLWORK_KILL_AT')
    assert err is not None and dec['canary']['decision'] == 'started' and 'version 6' in dec['train']['why']
    assert _state(acs) == {'champion': 4, 'challenger': 6, 'rollout': {'mode': 'canary', 'percent': 50.0}}
    from conftest import run_mlwork
    home = ('--home', str(acs['ws'].root))
    doc = run_mlwork('doctor', '--json', *home, cwd=acs['root'])             # seen, and left as it is without --fix
    assert doc.code == 1 and any('a killed retrain of acs_employment' in f for f in doc.json()['findings']), doc.out
    assert _state(acs)['challenger'] == 6
    # ... is put back by the next retrain of the model, from its journal, before anything else
    dec, _, err = _run(acs, 'next')
    assert err is None, err
    assert dec['recover']['decision'] == 'restored'
    assert dec['recover']['why'].endswith('did not finish (killed, or failed where nothing put it back); '
                                          'rollout canary 50 % → off 0 %; challenger 6 → none (unset)')
    assert dec['decide']['decision'] == 'no retrain' and _state(acs) == after
    assert not (acs['ws'].root / 'serve' / 'acs_employment' / 'retrain.json').exists()
    assert compare_states(registry_state(acs['reg']), replay_audit(acs['reg'].audit)) == []

    # killed again, once the challenger had the alias (before the canary): `mlwork doctor --fix` puts it back
    monkeypatch.setenv('MLWORK_KILL_AT', 'retrain.canary')
    dec, _, err = _run(acs, 'killed-again', force=True)
    monkeypatch.delenv('MLWORK_KILL_AT')
    assert err is not None and _state(acs)['challenger'] == 7
    fixed = run_mlwork('doctor', '--fix', '--reason', 'after the outage', '--json', *home, cwd=acs['root'])
    assert fixed.code == 0, fixed.out + fixed.err
    assert fixed.json()['retrains'][0]['restored'][1:] == ['rollout canary 50 % → off 0 %', 'challenger 7 → none (unset)']
    assert _state(acs) == after
    unset = acs['reg'].audit.entries().filter(pl.col('action') == 'model.unset_alias').tail(1)
    assert 'put back by mlwork doctor --fix: after the outage' in unset['why'][0]
