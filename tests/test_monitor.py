"""The monitoring run (`mlwork.monitor.metrics`) over a real prediction log: two registered versions, labels fed back
for part of the rows; realised metrics against scikit-learn, latency against numpy, drift against scipy."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp, spearmanr
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from mlwork.core import DataError, InvalidParameter
from mlwork.monitor.metrics import METRIC_COLUMNS, metrics_path, monitor_run, read_metrics
from mlwork.serve.predlog import PredictionLog, read_feedback, read_predictions

FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months', 'loan_amount', 'loan_purpose', 'employment']
MODEL = 'credit'
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
N = 1800  # 500 predictions a day on days 1-3, day 4 empty, 300 on day 5


@pytest.fixture(scope='module')
def logged(tmp_path_factory):
    """v1 trained on the stored dataset `credit` (lineage → reference), v2 on an in-memory frame; a log of both
    versions over days 1-3 and 5, feedback labels for ~40 % (a few duplicated, a few for unknown ids)."""
    from mlwork import Registry, generate, init_workspace, train_model
    from mlwork.data.store import DatasetStore
    ws = init_workspace(tmp_path_factory.mktemp('mon') / 'ws').workspace
    data = generate('credit', n_rows=3000, seed=3).frame
    store = DatasetStore.from_workspace(ws)
    v = store.ingest('credit', data).version
    reg = Registry(ws)
    m1 = train_model(f'credit@{v}', 'repaid', features=FEATURES[:5], store=store, num_boost_round=20,
                     early_stopping_rounds=None)
    m2 = train_model(data, 'repaid', features=FEATURES, num_boost_round=20, early_stopping_rounds=None, seed=1)
    reg.publish(m1, MODEL, alias='champion')
    reg.publish(m2, MODEL, alias='challenger')
    live = generate('credit', n_rows=N, seed=4).frame.with_columns(pl.col('age') + 8)  # older applicants: drift
    version = np.where(np.arange(N) % 3 == 0, 2, 1)
    pred = np.where(version == 1, m1.predict(live.select(FEATURES[:5])), m2.predict(live.select(FEATURES)))
    rng = np.random.default_rng(0)
    i = np.arange(N)
    minutes = np.where(i < 1500, i * 2.88, 4 * 1440 + (i - 1500) * 2.88)  # 500 a day on days 1-3, 300 on day 5
    feats = live.select([pl.col(f).cast(pl.String) if live.schema[f] != pl.Int64 and not live.schema[f].is_numeric()
                         else pl.col(f).cast(pl.Float64) for f in FEATURES])
    frame = pl.DataFrame({'request_id': [f'q{i}' for i in range(N)],
                          'ts': [T0 + timedelta(minutes=float(m)) for m in minutes], 'version': version,
                          'arm': np.where(version == 2, 'challenger', 'champion'), 'entity_key': [f'e{i}' for i in range(N)],
                          'prediction': pred, 'latency_ms': rng.gamma(2.0, 6.0, N), 'features': feats.to_struct()})
    labelled = rng.random(N) < 0.4
    truth = live['repaid'].to_numpy()
    items = [{'request_id': f'q{i}', 'label': str(int(truth[i])), 'ts': T0 + timedelta(days=6)} for i in np.flatnonzero(labelled)]
    dup = [{'request_id': f'q{i}', 'label': str(1 - int(truth[i])), 'ts': T0 + timedelta(days=7)}
           for i in np.flatnonzero(labelled)[:5]]  # a later, corrected label: the latest wins
    ghosts = [{'request_id': f'ghost{i}', 'label': '1', 'ts': T0 + timedelta(days=6)} for i in range(3)]
    with PredictionLog(ws, MODEL, durable=False) as log:
        log.write_frame_nowait(frame)
        asyncio.run(log.feedback(items + dup + ghosts))
    return ws, frame


def _truth(ws) -> pl.DataFrame:
    """The oracle's join: the latest feedback label per request id, on the logged rows (read eagerly)."""
    fb = read_feedback(ws, MODEL).sort('ts').unique('request_id', keep='last')
    return read_predictions(ws, MODEL).join(fb.select('request_id', y=pl.col('label').cast(pl.Int64)), on='request_id')


@pytest.fixture(scope='module')
def run(logged):
    ws, _ = logged
    return monitor_run(ws, MODEL, since=T0, until=T0 + timedelta(days=5), n_boot=50, sample_rows=100_000,
                       explain_rows=300, run_id='test-run')


def _metric(run, metric: str, version: int, day: int, group: str | None = None, kind: str | None = None) -> dict:
    m = run.metrics.filter((pl.col('kind') == kind) if kind else (pl.col('kind') != 'estimated'))
    m = m.filter((pl.col('metric') == metric) & (pl.col('version') == version)
                           & (pl.col('window_start') == T0 + timedelta(days=day)))
    if group is not None:
        m = m.filter(pl.col('group') == group)
    assert m.height == 1, (metric, version, day, m)
    return m.row(0, named=True)


def test_schema_windows_and_versions_never_mixed(logged, run):
    _, frame = logged
    assert run.metrics.schema == pl.Schema(METRIC_COLUMNS)
    assert run.windows == 4  # days 1, 2, 3 and 5 (day 4 is empty)
    rows = run.metrics.filter(pl.col('metric') == 'rows')
    per_version = frame.group_by('version').len()
    for v, n in per_version.iter_rows():
        assert rows.filter(pl.col('version') == v)['value'].sum() == n
    assert set(zip(rows['version'], rows['arm'])) == {(1, 'champion'), (2, 'challenger')}
    assert any('2026-01-08T00:00Z: no predictions' in n for n in run.notes)  # the empty day
    assert any('no status column' in n for n in run.notes)


def test_realised_performance_matches_sklearn(logged, run):
    ws, _ = logged
    truth = _truth(ws)
    for v in (1, 2):
        for day in (0, 1, 2, 4):
            part = truth.filter((pl.col('version') == v) & (pl.col('ts') >= T0 + timedelta(days=day))
                                & (pl.col('ts') < T0 + timedelta(days=day + 1)))
            y, p = part['y'].to_numpy(), part['prediction'].to_numpy()
            auc = _metric(run, 'roc_auc', v, day)
            assert auc['n'] == len(y)
            assert auc['value'] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
            assert auc['lower'] < auc['value'] < auc['upper']
            assert _metric(run, 'accuracy', v, day)['value'] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
            assert _metric(run, 'log_loss', v, day)['value'] == pytest.approx(log_loss(y, p), rel=1e-9)
            assert _metric(run, 'brier', v, day)['value'] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
            rows = _metric(run, 'rows', v, day)['value']
            assert _metric(run, 'label_coverage', v, day)['value'] == pytest.approx(len(y) / rows)
    assert run.counts['duplicates'] == 5 and run.counts['unknown'] == 3
    assert any('5 duplicated label' in n for n in run.notes) and any('3 label(s)' in n for n in run.notes)


def test_operational_matches_numpy(logged, run):
    _, frame = logged
    part = frame.filter((pl.col('version') == 1) & (pl.col('ts') < T0 + timedelta(days=1)))
    lat = part['latency_ms'].to_numpy()
    for q in (50, 95, 99):
        assert _metric(run, f'latency_p{q}_ms', 1, 0)['value'] == pytest.approx(np.percentile(lat, q), rel=1e-12)
    assert _metric(run, 'requests', 1, 0)['value'] == part.height
    assert _metric(run, 'rows_per_s', 1, 0)['value'] == pytest.approx(part.height / 86400)


def test_drift_against_scipy_and_training_reference(logged, run):
    ws, frame = logged
    from mlwork.data.store import DatasetStore
    ref = DatasetStore.from_workspace(ws).read('credit')
    cur = frame.filter((pl.col('version') == 1) & (pl.col('ts') >= T0 + timedelta(days=1))
                       & (pl.col('ts') < T0 + timedelta(days=2)))['features'].struct.field('debt_ratio')
    p = _metric(run, 'p_value', 1, 1, group='debt_ratio')
    assert p['value'] == pytest.approx(ks_2samp(ref['debt_ratio'].to_numpy(), cur.to_numpy()).pvalue, rel=1e-6)
    assert _metric(run, 'p_value', 1, 1, group='age')['value'] < 1e-6  # the shifted feature
    assert _metric(run, 'p_value', 1, 1, group='prediction')  # prediction drift vs the scored training data
    # v2 was trained on an in-memory frame: no reference, said so, and no drift rows for it
    assert any('version 2: trained on an in-memory frame' in n for n in run.notes)
    assert run.metrics.filter((pl.col('version') == 2) & (pl.col('kind') == 'drift')).height == 0


def test_attribution_and_estimation(logged, run):
    ws, _ = logged
    from mlwork import Registry
    from mlwork.data.store import DatasetStore
    shap = run.metrics.filter((pl.col('kind') == 'attribution') & (pl.col('version') == 1))
    assert set(shap.filter(pl.col('metric') == 'mean_abs_shap')['group']) == set(FEATURES[:5])
    one = shap.filter((pl.col('metric') == 'mean_abs_shap') & (pl.col('window_start') == T0))
    rho = shap.filter((pl.col('metric') == 'shap_rank_correlation') & (pl.col('window_start') == T0))['value'][0]
    # the oracle: the reference's mean |SHAP| from LightGBM's own pred_contrib, ranked against the window's by scipy
    m1 = Registry(ws).load(MODEL, 1)
    ref = DatasetStore.from_workspace(ws).read('credit').sample(300, seed=0)
    contrib = m1.booster.predict(m1.matrix(ref.select(m1.features)), pred_contrib=True)[:, :-1]
    ref_imp = dict(zip(m1.features, np.abs(contrib).mean(axis=0)))
    cur = dict(one.select('group', 'value').iter_rows())
    assert rho == pytest.approx(spearmanr([ref_imp[f] for f in m1.features], [cur[f] for f in m1.features]).statistic)
    est = run.metrics.filter(pl.col('kind') == 'estimated')
    assert set(est['metric']) == {'roc_auc', 'accuracy'} and (est['lower'] <= est['value']).all()
    assert set(est['version']) == {1, 2}  # both versions have enough labelled rows of their own


def test_fairness_per_group(logged):
    ws, _ = logged
    run = monitor_run(ws, MODEL, window='1w', sensitive=['employment'], n_boot=20, explain_rows=0)
    truth = _truth(ws).filter(pl.col('version') == 1)
    emp = truth['features'].struct.field('employment')
    rate = float((truth.filter(emp == 'employed')['prediction'] >= 0.5).mean())
    got = run.metrics.filter((pl.col('kind') == 'fairness') & (pl.col('metric') == 'selection_rate')
                             & (pl.col('version') == 1) & (pl.col('group') == 'employment=employed'))
    assert got['value'].to_list() == [pytest.approx(rate)]
    with pytest.raises(InvalidParameter, match='Sensitive column.*region'):
        monitor_run(ws, MODEL, sensitive=['region'], explain_rows=0)


def test_labels_frame_by_entity_key_and_bad_labels(logged):
    ws, frame = logged
    labels = pl.DataFrame({'entity_key': ['e1', 'e2', 'e3', 'e4', 'nobody'], 'y': [True, False, True, True, False]})
    run = monitor_run(ws, MODEL, labels=labels, label_key='entity_key', label_column='y', n_boot=0, explain_rows=0,
                      window='1w')
    assert run.counts == {'labels': 5, 'keys': 5, 'duplicates': 0, 'unknown': 1, 'joined': 4}
    cov = run.metrics.filter(pl.col('metric') == 'label_coverage').sort('version')
    assert cov['value'][0] == pytest.approx(3 / frame.filter(pl.col('version') == 1).height)
    with pytest.raises(DataError, match=r'must be binary.*found \[0.5\]'):
        monitor_run(ws, MODEL, labels=pl.DataFrame({'request_id': ['q1'], 'label': [0.5]}))
    with pytest.raises(DataError, match='wrong type'):
        monitor_run(ws, MODEL, labels=pl.DataFrame({'request_id': ['q1'], 'label': [[1]]}))
    with pytest.raises(DataError, match="found \\['maybe'\\]"):
        monitor_run(ws, MODEL, labels=pl.DataFrame({'request_id': ['q1'], 'label': ['maybe']}))


def test_empty_range_and_rows_windows(logged):
    ws, frame = logged
    empty = monitor_run(ws, MODEL, since=T0 + timedelta(days=3), until=T0 + timedelta(days=4))
    assert empty.metrics.height == 0 and empty.windows == 0 and 'no predictions in the range' in empty.notes[0]
    blocks = monitor_run(ws, MODEL, window='500 rows', n_boot=0, explain_rows=0, reference=frame.head(1))
    rows = blocks.metrics.filter(pl.col('metric') == 'rows').sort('version', 'window_start')
    assert rows.filter(pl.col('version') == 1)['value'].to_list() == [500.0, 500.0, 200.0]
    assert rows['window'][0] == 'rows 0-499'
    assert any('drift not computed against the reference' in n and 'at least 2' in n for n in blocks.notes)  # 1 row


def test_store_is_idempotent_and_read_filters(logged, run):
    ws, _ = logged
    path = run.store()
    run.store()
    assert path == metrics_path(ws, MODEL)
    stored = read_metrics(ws, MODEL, run_id='test-run')
    assert stored.height == run.metrics.height
    assert stored.sort(stored.columns).equals(run.metrics.sort(run.metrics.columns))
    assert set(read_metrics(ws, MODEL, metric='roc_auc')['metric']) == {'roc_auc'}
    assert set(read_metrics(ws, MODEL, kind='drift', since=T0 + timedelta(days=2))['window_start']) == {
        T0 + timedelta(days=2), T0 + timedelta(days=4)}


def test_labels_and_reference_as_dataset_refs_and_sensitive_from_labels(logged):
    ws, frame = logged
    from mlwork.data.store import DatasetStore
    store = DatasetStore.from_workspace(ws)
    rng = np.random.default_rng(5)
    labels = pl.DataFrame({'request_id': frame['request_id'], 'outcome': rng.integers(0, 2, N).astype(np.int8),
                           'sex': rng.choice(['F', 'M'], N)})
    lv = store.ingest('outcomes', labels).version
    ref = frame.select(pl.col('features').struct.unnest(), 'prediction').head(600)
    rv = store.ingest('live_ref', ref).version
    run = monitor_run(ws, MODEL, labels=f'outcomes@{lv}', label_column='outcome', reference=f'live_ref@{rv}',
                      sensitive=['sex'], window='1w', n_boot=20, explain_rows=0)
    assert run.counts['joined'] == N and run.counts['unknown'] == 0
    cov = run.metrics.filter(pl.col('metric') == 'label_coverage')
    assert cov['value'].to_list() == [1.0, 1.0]
    v2 = frame.join(labels, on='request_id').filter(pl.col('version') == 2)
    auc = run.metrics.filter((pl.col('metric') == 'roc_auc') & (pl.col('kind') == 'performance') & (pl.col('version') == 2))
    assert auc['value'][0] == pytest.approx(roc_auc_score(v2['outcome'], v2['prediction']), abs=1e-12)
    groups = set(run.metrics.filter(pl.col('kind') == 'fairness')['group'])
    assert {'sex=F', 'sex=M'} <= groups
    # the given reference applies to both versions: v2 has drift rows now
    assert run.metrics.filter((pl.col('version') == 2) & (pl.col('kind') == 'drift')).height > 0
    assert not any('in-memory frame' in n for n in run.notes)
