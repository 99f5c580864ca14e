"""mlwork.evaluation.explain: TreeSHAP values against two independent oracles (shap's TreeExplainer, brute-force Shapley)."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError, InvalidParameter, MlworkError
from mlwork.evaluation.explain import Explanation, dependence_plot, explain, summary_plot

FEATS = ['income', 'age', 'debt', 'noise']


def _frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    df = pl.DataFrame({'income': rng.normal(50, 15, n), 'age': rng.integers(18, 80, n).astype(float),
                       'debt': rng.gamma(2, 5, n), 'noise': rng.normal(size=n)})
    logit = 0.08 * (df['income'].to_numpy() - 50) - 0.15 * (df['debt'].to_numpy() - 10) + 0.03 * (df['age'].to_numpy() - 45)
    return df.with_columns(y=pl.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)))


@pytest.fixture(scope='module')
def booster():
    df = _frame(600, 0)
    return lgb.train({'objective': 'binary', 'num_leaves': 6, 'min_data_in_leaf': 20, 'verbose': -1, 'seed': 0,
                      'num_threads': 1}, lgb.Dataset(df.select(FEATS).to_numpy(), df['y'].to_numpy(), feature_name=FEATS),
                     num_boost_round=12)


def _path_value(node: dict, x: np.ndarray, subset: set[int]) -> float:
    """Path-dependent conditional expectation E[f(x) | x_S] over one tree: features outside S follow both
    children weighted by their training counts (the value function TreeSHAP is exact for)."""
    if 'leaf_value' in node:
        return node['leaf_value']
    left, right = node['left_child'], node['right_child']
    if node['split_feature'] in subset:
        assert node['decision_type'] == '<=' and not np.isnan(x[node['split_feature']])
        return _path_value(left if x[node['split_feature']] <= node['threshold'] else right, x, subset)
    cnt = lambda c: c['leaf_count'] if 'leaf_value' in c else c['internal_count']  # noqa: E731
    lc, rc = cnt(left), cnt(right)
    return (lc * _path_value(left, x, subset) + rc * _path_value(right, x, subset)) / (lc + rc)


def _brute_force_shap(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """Shapley values by enumerating all 2^F coalitions, F = 4; last column: the base value v(∅)."""
    trees = [t['tree_structure'] for t in booster.dump_model()['tree_info']]
    f = x.shape[1]
    v = lambda row, s: sum(_path_value(t, row, s) for t in trees)  # noqa: E731
    out = np.zeros((len(x), f + 1))
    for r, row in enumerate(x):
        vals = {frozenset(s): v(row, set(s)) for k in range(f + 1) for s in itertools.combinations(range(f), k)}
        for i in range(f):
            for s, val in vals.items():
                if i in s:
                    continue
                wgt = math.factorial(len(s)) * math.factorial(f - len(s) - 1) / math.factorial(f)
                out[r, i] += wgt * (vals[s | {i}] - val)
        out[r, f] = vals[frozenset()]
    return out


def test_matches_brute_force_shapley(booster):
    df = _frame(25, 1)
    ex = explain(booster, df)
    oracle = _brute_force_shap(booster, df.select(FEATS).to_numpy())
    err = np.abs(ex.contributions.to_numpy() - oracle).max()
    assert err < 1e-6, err


def _shap_tree(node: dict) -> dict:
    """One LightGBM tree (dump_model) as shap's generic array format, so shap runs its OWN TreeSHAP code.
    (Passing the Booster itself would not be independent: shap then calls LightGBM's pred_contrib.)"""
    cl, cr, cd, ft, th, val, w = [], [], [], [], [], [], []

    def visit(nd):
        i = len(cl)
        cl.append(-1); cr.append(-1); cd.append(-1); ft.append(-2); th.append(0.0); val.append(0.0)
        if 'leaf_value' in nd:
            val[i] = nd['leaf_value']; w.append(nd['leaf_count'])
            return i
        assert nd['decision_type'] == '<='
        w.append(nd['internal_count']); ft[i] = nd['split_feature']; th[i] = nd['threshold']
        left, right = visit(nd['left_child']), visit(nd['right_child'])
        cl[i], cr[i], cd[i] = left, right, left if nd['default_left'] else right
        return i

    visit(node)
    a = lambda v, d=np.float64: np.asarray(v, dtype=d)  # noqa: E731
    return {'children_left': a(cl, np.int32), 'children_right': a(cr, np.int32), 'children_default': a(cd, np.int32),
            'features': a(ft, np.int32), 'thresholds': a(th), 'values': a(val)[:, None], 'node_sample_weight': a(w)}


def test_matches_shap_tree_explainer(booster):
    import shap  # a dev dependency: this oracle must run, never skip
    df = _frame(200, 2)
    ex = explain(booster, df)
    trees = [_shap_tree(t['tree_structure']) for t in booster.dump_model()['tree_info']]
    te = shap.TreeExplainer({'trees': trees, 'tree_output': 'raw_value', 'objective': 'squared_error'})
    sv = np.asarray(te.shap_values(df.select(FEATS).to_numpy()))
    assert sv.shape == ex.values.shape
    assert np.abs(ex.values - sv).max() < 1e-6
    assert abs(float(np.ravel(te.expected_value)[0]) - ex.base_value[0]) < 1e-6


def test_trained_model_additivity_and_rationale():
    from mlwork.models.train import train_model  # tests may use the higher layer; the module itself must not
    rng = np.random.default_rng(3)
    df = _frame(500, 3).with_columns(segment=pl.Series(rng.choice(['retail', 'sme', 'corp'], 500)))
    model = train_model(df, 'y', task='binary', num_boost_round=40, early_stopping_rounds=10, seed=0)
    ex = explain(model, df.head(50))
    p = model.predict(df.head(50).select(model.features))
    logit = np.log(p / (1 - p))
    assert np.abs(ex.contributions.sum_horizontal().to_numpy() - logit).max() < 1e-6  # same trees as predict
    reasons = ex.top_reasons(3)
    assert reasons.height == 150 and reasons.columns == ['row', 'rank', 'feature', 'value', 'contribution']
    first = reasons.filter(pl.col('row') == 0)
    assert (first['contribution'].abs().diff().drop_nulls() <= 0).all()  # largest |contribution| first
    if 'segment' in model.features:  # a categorical feature shows its category, not its code
        seg = reasons.filter(pl.col('feature') == 'segment')['value'].unique().to_list()
        assert set(seg) <= {'retail', 'sme', 'corp'}
    r = ex.rationale(0, k=2)
    assert len(r) == 2 and set(r[0]) == {'rank', 'feature', 'value', 'contribution'}
    gi = ex.global_importance()
    assert abs(gi['share'].sum() - 1) < 1e-12 and (gi['mean_abs_shap'].diff().drop_nulls() <= 0).all()
    d = ex.to_dict()
    assert d['rows'] == 50 and '<table' in ex._repr_html_()


def test_multiclass_needs_class_index_and_is_additive():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    y = np.argmax(x[:, :3] + rng.normal(scale=0.5, size=(300, 3)), axis=1)
    b = lgb.train({'objective': 'multiclass', 'num_class': 3, 'verbose': -1, 'num_threads': 1, 'num_leaves': 6},
                  lgb.Dataset(x, y, feature_name=FEATS), num_boost_round=8)
    with pytest.raises(InvalidParameter, match='class_index'):
        explain(b, x)
    raw = b.predict(x, raw_score=True)
    for k in range(3):
        ex = explain(b, x, class_index=k)
        assert np.abs(ex.contributions.to_numpy().sum(axis=1) - raw[:, k]).max() < 1e-6


def test_additivity_violation_is_reported(booster):
    class Broken:
        """A booster whose raw score disagrees with its contributions (fault injection)."""
        def __init__(self, b): self.b = b
        def feature_name(self): return self.b.feature_name()
        def dump_model(self): return self.b.dump_model()
        def predict(self, x, raw_score=False, **kw):
            out = self.b.predict(x, raw_score=raw_score, **kw)
            return out + 0.1 if raw_score else out
    with pytest.raises(MlworkError, match='do not add up'):
        explain(Broken(booster), _frame(10, 5))


def test_bad_inputs(booster):
    with pytest.raises(DataError, match='`debt`'):
        explain(booster, _frame(10, 6).drop('debt'))
    with pytest.raises(DataError, match='shape'):
        explain(booster, np.zeros((3, 2)))
    with pytest.raises(InvalidParameter, match="'model' parameter"):
        explain(object(), _frame(3, 6))
    ex = explain(booster, _frame(10, 6))
    with pytest.raises(InvalidParameter, match="'k' parameter"):
        ex.top_reasons(9)


def test_plots(booster):
    ex = explain(booster, _frame(100, 7))
    fig = dependence_plot(ex, 'income', color_by='debt')
    assert len(fig.axes) == 2 and len(fig.axes[0].collections[0].get_offsets()) == 100
    fig = summary_plot(ex, max_features=3)
    assert len(fig.axes[0].patches) == 3


def test_explain_does_not_import_train():
    code = 'import sys, mlwork.evaluation.explain, mlwork.evaluation.metrics; assert "mlwork.models.train" not in sys.modules, "layering"'
    subprocess.run([sys.executable, '-c', code], check=True)
