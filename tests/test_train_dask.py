"""Training on Dask (lightgbm.dask): same quality as local training on real data, categoricals, lineage, the
three ways to name a cluster (embedded LocalCluster, scheduler address, Client), cleanup, and clear errors."""
from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score

pytest.importorskip('distributed')
psutil = pytest.importorskip('psutil')

from mlwork.core import DataError
from mlwork.datasets import load_acs
from mlwork.synthetic import generate
from mlwork.models.train import LGBMTrainer, MissingExtra, TrainedModel, train_model

ACS_FEATURES = ['AGEP', 'SCHL', 'MAR', 'RELP', 'DIS', 'ESP', 'CIT', 'MIG', 'MIL', 'ANC', 'NATIVITY', 'DEAR', 'DEYE',
                'DREM', 'SEX', 'RAC1P']
ACS_KW = dict(features=ACS_FEATURES, num_boost_round=100, early_stopping_rounds=15, params={'learning_rate': 0.1})
AUC_TOLERANCE = 0.01  # measured: |AUC local − AUC dask| ≈ 0.0005 on ACS 2015 → 2016


@pytest.fixture(scope='module')
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40) as c:
        yield c


@pytest.fixture(scope='module')
def client(cluster):
    from distributed import Client
    with Client(cluster) as c:
        yield c


def _children() -> set[int]:
    "Child processes, except multiprocessing's resource tracker (it lives as long as the interpreter)."
    return {p.pid for p in psutil.Process().children(recursive=True) if 'resource_tracker' not in ' '.join(p.cmdline())}


def test_acs_quality_matches_local_on_two_embedded_workers():
    train, test = load_acs(2015), load_acs(2016)
    before = _children()
    on_dask = train_model(train, 'employed', backend='dask', **ACS_KW)  # embedded LocalCluster: 2 workers × 1 thread
    local = train_model(train, 'employed', **ACS_KW)
    y = test['employed'].to_numpy()
    auc_local = roc_auc_score(y, local.predict(test.select(ACS_FEATURES)))
    auc_dask = roc_auc_score(y, on_dask.predict(test.select(ACS_FEATURES)))
    print(f'ACS 2015 -> 2016 ROC AUC: local {auc_local:.4f}, dask {auc_dask:.4f}, '
          f'best iteration {local.best_iteration} / {on_dask.best_iteration}')
    assert auc_dask > 0.75
    assert abs(auc_local - auc_dask) < AUC_TOLERANCE, (auc_local, auc_dask)
    lin = on_dask.lineage
    assert (lin.backend, lin.n_workers) == ('dask', 2) and (local.lineage.backend, local.lineage.n_workers) == ('local', 1)
    assert lin.data == local.lineage.data and lin.split == local.lineage.split
    assert (lin.rows_train, lin.rows_valid) == (local.lineage.rows_train, local.lineage.rows_valid)
    assert lin.params['tree_learner'] == 'data' and lin.params['seed'] == 0
    assert 0 < on_dask.best_iteration <= 100
    assert on_dask.booster.current_iteration() == len(on_dask.evals['valid']['binary_logloss'])
    # the embedded cluster's worker processes are gone
    assert not (_children() - before)


def test_categoricals_are_native_categorical_splits(client):
    frame = generate('credit', n_rows=4_000, seed=3).frame
    cats = [c for c, t in frame.schema.items() if isinstance(t, (pl.Enum, pl.Categorical)) or t == pl.String]
    cats = [c for c in cats if c != 'repaid']
    assert cats, frame.schema
    feats = cats + [c for c, t in frame.schema.items() if t.is_numeric() and c not in ('repaid', 'id')][:4]
    kw = dict(features=feats, num_boost_round=60, early_stopping_rounds=None)
    on_dask = train_model(frame, 'repaid', backend='dask', client=client, **kw)
    local = train_model(frame, 'repaid', **kw)
    assert on_dask.categories == local.categories and on_dask.kinds == local.kinds
    dump = on_dask.booster.dump_model()
    cat_idx = {feats.index(c) for c in cats}

    def splits(node):
        if 'split_index' in node:
            yield node['split_feature'], node['decision_type']
            yield from splits(node['left_child']); yield from splits(node['right_child'])
    seen = [(f, d) for t in dump['tree_info'] for f, d in splits(t['tree_structure'])]
    assert {d for f, d in seen if f in cat_idx} == {'=='}, 'categorical features must split by category sets'
    y = frame['repaid'].to_numpy()
    a = roc_auc_score(y, on_dask.predict(frame.select(feats)))
    b = roc_auc_score(y, local.predict(frame.select(feats)))
    assert abs(a - b) < 0.02, (a, b)
    # an unseen category is missing, with the same warning as a local model
    odd = frame.head(3).select(feats).with_columns(pl.lit('never-seen').alias(cats[0]))
    with pytest.warns(UserWarning, match='not seen in training'):
        on_dask.predict(odd)


def test_scheduler_address_and_client_left_open(client, cluster):
    frame = generate('credit', n_rows=2_000, seed=1).frame.drop('id', 'timestamp')
    m = LGBMTrainer(backend='dask', client=cluster.scheduler_address, num_boost_round=30).fit(frame, 'repaid')
    assert m.lineage_.backend == 'dask' and m.lineage_.n_workers == 2
    assert client.status == 'running'  # a Client we were given is not closed
    m1 = train_model(frame, 'repaid', backend='dask', client=client, n_workers=1, num_boost_round=30)
    assert m1.lineage.n_workers == 1
    with pytest.raises(Exception, match="'n_workers' parameter of train_model must be at most the 2 worker"):
        train_model(frame, 'repaid', backend='dask', client=client, n_workers=3)


def test_regression_and_multiclass_with_early_stopping(client, tmp_path):
    demand = generate('demand', n_rows=4_000, seed=2).frame
    feats = ['store_id', 'product_id', 'price', 'promo', 'temperature', 'day_of_week']
    kw = dict(task='regression', features=feats, num_boost_round=400, early_stopping_rounds=10, params={'learning_rate': 0.2})
    r = train_model(demand, 'units_sold', backend='dask', client=client, **kw)
    loc = train_model(demand, 'units_sold', **kw)
    curve = r.evals['valid']['l2']
    assert r.best_iteration < 400 and len(curve) == r.booster.current_iteration() == r.best_iteration + 10
    assert min(curve) == curve[r.best_iteration - 1]
    y = demand['units_sold'].to_numpy()
    rmse_d = mean_squared_error(y, r.predict(demand.select(feats))) ** 0.5
    rmse_l = mean_squared_error(y, loc.predict(demand.select(feats))) ** 0.5
    assert rmse_d < 1.1 * rmse_l, (rmse_d, rmse_l)
    back = TrainedModel.load(r.save(tmp_path / 'm.json'))
    assert back.lineage.backend == 'dask' and np.array_equal(back.predict(demand.select(feats)), r.predict(demand.select(feats)))
    json.dumps(back.lineage.to_dict())

    mc = demand.with_columns(level=pl.when(pl.col('units_sold') < 5).then(pl.lit('low'))
                             .when(pl.col('units_sold') < 15).then(pl.lit('mid')).otherwise(pl.lit('high')))
    m = train_model(mc, 'level', task='multiclass', features=feats, backend='dask', client=client, num_boost_round=40)
    assert m.classes == ['high', 'low', 'mid'] and m.predict(mc.select(feats)).shape == (mc.height, 3)
    assert 'multi_logloss' in m.evals['valid']


def test_class_missing_on_a_worker_is_an_error(client):
    rng = np.random.default_rng(0)
    y = ['a', 'b'] * 150
    y[0] = y[2] = 'c'  # rows are dealt round robin: both 'c' rows go to the first worker
    f = pl.DataFrame({'x': rng.normal(size=300), 'y': y})
    with pytest.raises(DataError, match='received no training row of class'):
        train_model(f, 'y', task='multiclass', backend='dask', client=client, valid_fraction=0.0, num_boost_round=5)


def test_missing_dask_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'distributed', None)  # import distributed -> ImportError
    frame = pl.DataFrame({'x': [0.0, 1.0, 2.0, 3.0] * 10, 'y': [0, 1] * 20})
    with pytest.raises(MissingExtra, match=r"pip install 'mlwork\[dask\]'"):
        train_model(frame, 'y', backend='dask')
    with pytest.raises(ImportError):  # MissingExtra is also an ImportError
        train_model(frame, 'y', backend='dask')
