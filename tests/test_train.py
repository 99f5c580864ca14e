"""LightGBM training: quality on real and synthetic data (scikit-learn metrics as oracle), determinism,
splits, categorical mapping, lineage, and bad inputs."""
from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score

from mlwork.core import DataError, InvalidParameter, NotFittedError, code_version
from mlwork.datasets import load_acs
from mlwork.data.batches import content_hash
from mlwork.data.store import DatasetStore
from mlwork.synthetic import generate
from mlwork.models.train import LGBMTrainer, TrainedModel, UnseenCategoryWarning, train_model

ACS_FEATURES = ['AGEP', 'SCHL', 'MAR', 'RELP', 'DIS', 'ESP', 'CIT', 'MIG', 'MIL', 'ANC', 'NATIVITY', 'DEAR', 'DEYE',
                'DREM', 'SEX', 'RAC1P']
DEMAND_FEATURES = ['store_id', 'product_id', 'price', 'promo', 'temperature', 'day_of_week']


@pytest.fixture(scope='module')
def acs_model():
    return LGBMTrainer(num_boost_round=100, early_stopping_rounds=15, params={'learning_rate': 0.1}).fit(load_acs(2015), 'employed', ACS_FEATURES)


@pytest.fixture(scope='module')
def demand():
    return generate('demand', n_rows=12_000, seed=1).frame


def test_acs_auc_on_next_year(acs_model):
    test = load_acs(2016)
    p = acs_model.predict(test.select(ACS_FEATURES))
    auc = roc_auc_score(test['employed'].to_numpy(), p)
    assert auc > 0.75, auc
    lin = acs_model.lineage_
    assert lin.rows_train + lin.rows_valid == load_acs(2015).height
    assert 0 < acs_model.best_iteration_ <= 100
    assert acs_model.evals_['valid']['binary_logloss'][-1] < acs_model.evals_['valid']['binary_logloss'][0]
    assert set(acs_model.categories_) == set(ACS_FEATURES) - {'AGEP'}


def test_lineage_complete_and_json(acs_model):
    d = acs_model.lineage_.to_dict()
    json.dumps(d)
    assert d['data']['ref'] is None
    assert d['data']['content_hash'] == content_hash(load_acs(2015).select(*ACS_FEATURES, 'employed'))
    assert d['code'] == json.loads(json.dumps(code_version()))
    assert d['packages']['lightgbm'] and d['packages']['polars']
    assert d['params']['seed'] == 0 and d['params']['deterministic'] is True and d['seed'] == 0
    assert d['best_iteration'] == acs_model.best_iteration_
    assert 'Lineage' in acs_model._repr_html_()


def test_deterministic_model_text():
    frame = load_acs(2015).head(8_000)
    fit = lambda seed: LGBMTrainer(num_boost_round=40, early_stopping_rounds=None, seed=seed,
                                   params={'bagging_fraction': 0.8, 'bagging_freq': 1, 'feature_fraction': 0.8}
                                   ).fit(frame, 'employed', ACS_FEATURES).model_text()
    a, b = fit(3), fit(3)
    assert a == b
    assert fit(4) != a  # the seed does reach the split and the bagging


def test_time_split_has_no_validation_row_before_cut(demand):
    cut = dt.datetime(2024, 10, 1)
    m = train_model(demand, 'units_sold', task='regression', split='time', time_column='timestamp', valid_from=cut,
                    num_boost_round=30, early_stopping_rounds=None)
    ts = demand['timestamp']
    assert m.lineage.rows_valid == (ts >= cut).sum()
    assert m.lineage.rows_train == (ts < cut).sum()
    assert m.lineage.split['cut'] == str(cut)
    assert 'timestamp' not in m.features


def test_time_split_default_cut_is_latest_fraction(demand):
    shuffled = demand.sample(fraction=1.0, shuffle=True, seed=5)  # row order must not matter
    m = train_model(shuffled, 'units_sold', task='regression', split='time', time_column='timestamp',
                    valid_fraction=0.25, num_boost_round=10)
    cut = dt.datetime.fromisoformat(m.lineage.split['cut'])
    ts = shuffled['timestamp']
    assert m.lineage.rows_valid == (ts >= cut).sum()
    assert ts.filter(ts < cut).max() < cut <= ts.filter(ts >= cut).min()
    assert abs(m.lineage.rows_valid - 0.25 * shuffled.height) <= 1


def test_regression_beats_mean(demand):
    # the catalogue (prices, store factors) depends on the seed: test on the latest rows of the same generation
    later = generate('demand', n_rows=16_000, seed=1).frame
    train, test = later.head(12_000), later.tail(4_000)
    m = LGBMTrainer(task='regression', num_boost_round=300, early_stopping_rounds=30).fit(train, 'units_sold', DEMAND_FEATURES)
    r2 = r2_score(test['units_sold'].to_numpy(), m.predict(test.select(DEMAND_FEATURES)))
    assert r2 > 0.3, r2


def test_categorical_mapping_and_unseen(demand, tmp_path):
    m = train_model(demand, 'units_sold', task='regression', features=DEMAND_FEATURES, num_boost_round=40)
    assert m.categories['store_id'] == demand['store_id'].dtype.categories.to_list()
    rows = demand.head(50).select(DEMAND_FEATURES)
    base = m.predict(rows)
    as_string = rows.with_columns(pl.col('store_id', 'product_id').cast(pl.String))
    np.testing.assert_array_equal(m.predict(as_string), base)  # same mapping whatever the categorical type
    as_cat = rows.with_columns(pl.col('store_id').cast(pl.String).cast(pl.Categorical))
    np.testing.assert_array_equal(m.predict(as_cat), base)
    unseen = as_string.with_columns(store_id=pl.lit('S99'))
    with pytest.warns(UnseenCategoryWarning, match=r'`store_id`: 50 row\(s\), e.g. \[.S99.\]'):
        p_unseen = m.predict(unseen)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        p_null = m.predict(as_string.with_columns(store_id=pl.lit(None, pl.String)))
    np.testing.assert_array_equal(p_unseen, p_null)
    with pytest.raises(DataError, match='not seen in training'):
        m.predict(unseen, unseen='raise')
    back = TrainedModel.load(m.save(tmp_path / 'model.json'))
    np.testing.assert_array_equal(back.predict(rows), base)
    assert back.lineage.to_dict() == m.lineage.to_dict()


def test_predict_schema_errors(demand):
    m = train_model(demand, 'units_sold', task='regression', features=DEMAND_FEATURES, num_boost_round=5)
    rows = demand.head(5).select(DEMAND_FEATURES)
    with pytest.raises(DataError, match='Missing feature column.*`price`'):
        m.predict(rows.drop('price'))
    with pytest.raises(DataError, match='column `price` must be numeric as in training \\(found String\\)'):
        m.predict(rows.with_columns(pl.col('price').cast(pl.String)))
    with pytest.raises(DataError, match='Unexpected column.*`id`'):
        m.predict(demand.head(5).select('id', *DEMAND_FEATURES))
    assert m.predict(demand.head(5), extra='ignore').shape == (5,)


def test_fraud_imbalance_pr_auc():
    train = generate('fraud', n_rows=30_000, seed=3, fraud_rate=0.01).frame
    test = generate('fraud', n_rows=15_000, seed=4, fraud_rate=0.01).frame
    features = ['amount', 'merchant_category', 'channel', 'country', 'distance_km', 'hour', 'n_tx_24h', 'card_present']
    y = test['is_fraud'].to_numpy()
    for kw in ({'is_unbalance': True}, {'scale_pos_weight': 20.0}):
        m = train_model(train, 'is_fraud', features=features, split='time', time_column='timestamp',
                        num_boost_round=150, early_stopping_rounds=20, **kw)
        key = next(iter(kw))
        assert m.lineage.params[key] == kw[key]
        ap = average_precision_score(y, m.predict(test.select(features)))
        assert ap > 3 * y.mean(), (kw, ap, y.mean())


def test_multiclass():
    f = generate('credit', n_rows=3_000, seed=0).frame
    num = [c for c, t in f.schema.items() if t.is_float()][:3]
    col = num[0]
    f = f.with_columns(band=pl.when(pl.col(col) < pl.col(col).quantile(1 / 3)).then(pl.lit('lo'))
                     .when(pl.col(col) < pl.col(col).quantile(2 / 3)).then(pl.lit('mid')).otherwise(pl.lit('hi')))
    m = LGBMTrainer(task='multiclass', num_boost_round=50).fit(f, 'band', num)
    p = m.predict(f.select(num))
    assert p.shape == (f.height, 3) and np.allclose(p.sum(axis=1), 1)
    assert m.classes_ == ['hi', 'lo', 'mid']
    assert (np.array(m.classes_)[p.argmax(1)] == f['band'].to_numpy()).mean() > 0.9


def test_from_store(tmp_path, demand):
    store = DatasetStore(tmp_path / 'data')
    store.ingest('demand', demand.head(3_000))
    v1 = store.ingest('demand', demand.slice(3_000, 3_000))
    est = LGBMTrainer(task='regression', num_boost_round=10).fit('demand@1', 'units_sold', DEMAND_FEATURES, store=store)
    data = est.lineage_.data
    assert data['ref'] == 'demand@1' and data['version_hash'] == v1.content_hash
    read = store.read('demand@1')  # the store's row order (stable for a version), not the ingest order
    assert read.sort('id').equals(demand.head(6_000))
    assert data['content_hash'] == content_hash(read.select(*DEMAND_FEATURES, 'units_sold'))
    again = LGBMTrainer(task='regression', num_boost_round=10).fit('demand@1', 'units_sold', DEMAND_FEATURES, store=store)
    assert again.model_text() == est.model_text()
    assert est.lineage_.rows_train + est.lineage_.rows_valid == 6_000
    latest = LGBMTrainer(task='regression', num_boost_round=10).fit('demand', 'units_sold', DEMAND_FEATURES, store=store)
    assert latest.lineage_.data['ref'] == 'demand@1'


def test_sklearn_contract():
    est = LGBMTrainer(task='regression', params={'num_leaves': 7}, seed=4)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin.params is not None
    with pytest.raises(NotFittedError, match=r'This LGBMTrainer is not fitted yet: call `fit\(data, target\)` first\.'):
        est.predict(pl.DataFrame({'x': [1.0]}))
    assert not hasattr(est, 'booster_')
    # every __init__ parameter is declared with its constraints
    import inspect
    assert list(inspect.signature(LGBMTrainer).parameters) == list(LGBMTrainer._parameter_constraints)
    with pytest.raises(InvalidParameter, match="The 'num_boost_round' parameter of LGBMTrainer must be an int >= 1. Got 0 instead."):
        LGBMTrainer(num_boost_round=0).fit(FRAME, 'y')


FRAME = pl.DataFrame({'x': [0.1, 0.5, 0.9, 0.3, 0.7, 0.2] * 20, 'g': ['a', 'b'] * 60, 'y': [0, 1] * 60,
                      'c': [1] * 120, 'k': [0, 1, 2] * 39 + [0, 1, 3], 'n': [None] * 120, 's': ['u', 'v'] * 60},
                     schema_overrides={'n': pl.Float64})


@pytest.mark.parametrize('kw, err, pattern', [
    ({'target': 'label'}, DataError, 'Target column `label` not found'),
    ({'target': 'c'}, DataError, 'Target column `c` is constant'),
    ({'target': 'k', 'task': 'multiclass'}, DataError, r'single example: \[3\]'),
    ({'target': 'y', 'features': ['x', 'n']}, DataError, 'Feature column `n` is entirely null'),
    ({'target': 's', 'task': 'regression'}, DataError, r'`s` must be numeric for regression \(found String\)'),
    ({'target': 'y', 'task': 'ranking'}, InvalidParameter, "'task' parameter of train_model must be one of 'binary'"),
    ({'target': 'y', 'features': ['x', 'zz']}, DataError, 'Feature column.*`zz` not found'),
    ({'target': 'k'}, DataError, 'exactly 2 classes for binary'),
    ({'target': 'y', 'split': 'time'}, InvalidParameter, "'time_column' parameter"),
    ({'target': 'y', 'valid_fraction': 1.5}, InvalidParameter, "'valid_fraction' parameter.*Got 1.5"),
    ({'target': 'y', 'is_unbalance': True, 'scale_pos_weight': 3.0}, InvalidParameter, 'not both'),
    ({'target': 'x', 'task': 'regression', 'is_unbalance': True}, InvalidParameter, "'is_unbalance' parameter"),
    ({'target': 'y', 'features': ['x', 'y']}, DataError, 'cannot also be a feature'),
])
def test_bad_inputs(kw, err, pattern):
    with pytest.raises(err, match=pattern):
        train_model(FRAME, **{'num_boost_round': 5, **kw})


def test_unsupported_feature_type():
    f = FRAME.with_columns(when=pl.lit(dt.date(2024, 1, 1)))
    with pytest.raises(DataError, match=r'column `when` must be numeric, boolean or categorical.*\(found Date\)'):
        train_model(f, 'y', features=['x', 'when'], num_boost_round=5)


def test_bad_lightgbm_parameters_are_refused_before_any_data_is_read(tmp_path):
    import re
    store = DatasetStore(tmp_path / 'store')                              # empty: reading 'credit@0' would be NotFound
    for params, says in (({'num_leave': 63}, 'unknown: num_leave'), ({'num_leaves': -1}, 'Check failed: (num_leaves) > (1)'),
                         ({'objective': 'nope'}, 'Unknown objective type name: nope'), ({'learning_rate': 'x'}, 'LightGBM accepts')):
        with pytest.raises(InvalidParameter, match=re.escape(says)):
            train_model('credit@0', 'repaid', params=params, store=store)
