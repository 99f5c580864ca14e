"""Mitigation on ACS against fairlearn 0.15 (the oracle): per-group thresholds vs ThresholdOptimizer, reweighing and a
model retrained with its weights, the trade-offs, and bad input."""
from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError, InvalidParameter
from mlwork.datasets import load_acs
from mlwork.fairness.metrics import fairness_audit
from mlwork.fairness.mitigation import GroupCurves, group_thresholds, reweighing, tradeoff
from mlwork.models.train import train_model

fairlearn = pytest.importorskip('fairlearn')
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,  # noqa: E402
                               true_positive_rate)
from fairlearn.postprocessing import ThresholdOptimizer  # noqa: E402

TOL = 0.01
FAIRLEARN = {'demographic_parity': 'demographic_parity', 'equal_opportunity': 'true_positive_rate_parity',
             'equalized_odds': 'equalized_odds'}


@pytest.fixture(scope='module')
def acs():
    "A LightGBM model trained on 2015, scored on 2016 (held out): the frame with `score`, and the model."
    d = load_acs([2015, 2016]).drop('id')
    train, test = (d.filter(pl.col('year') == y).drop('year') for y in (2015, 2016))
    model = train_model(train, 'employed', num_boost_round=100, seed=0)
    test = test.with_columns(score=pl.Series(model.predict(test.drop('employed'))))
    return train, test, model


def _disparity(y: np.ndarray, d: np.ndarray, s: np.ndarray, constraint: str) -> float:
    "The constraint's difference by fairlearn's own functions."
    if constraint == 'demographic_parity':
        return float(demographic_parity_difference(y, d, sensitive_features=s))
    if constraint == 'equalized_odds':
        return float(equalized_odds_difference(y, d, sensitive_features=s))
    return float(MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=d, sensitive_features=s).difference())


def _fairlearn(test: pl.DataFrame, sens: str, constraint: str, big: np.ndarray) -> tuple[float, float]:
    "ThresholdOptimizer (randomised) on the same scores: mean accuracy and disparity over 5 draws."
    import pandas as pd
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(BaseEstimator, ClassifierMixin):  # the model's scores, already computed
        def fit(self, X, y):
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, X):
            return np.asarray(X)[:, 0]

    X, y = pd.DataFrame({'score': test['score'].to_numpy()}), test['employed'].to_numpy()
    s = test[sens].cast(pl.String).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        opt = ThresholdOptimizer(estimator=Scores().fit(X, y), constraints=FAIRLEARN[constraint], objective='accuracy_score',
                                 prefit=True, predict_method='predict').fit(X, y, sensitive_features=s)
        draws = [np.asarray(opt.predict(X, sensitive_features=s, random_state=r)) for r in range(5)]
    return (float(np.mean([(d == y).mean() for d in draws])),
            float(np.mean([_disparity(y[big], d[big], s[big], constraint) for d in draws])))  # on the groups mlwork adjusts


def _exact_best_two_groups(test: pl.DataFrame, sens: str, constraint: str, tol: float) -> float:
    "Brute force over every operating point of group A: the most accurate deterministic pair within `tol`."
    cv = GroupCurves.from_frame(test, y_true='employed', score='score', sensitive=sens)
    rates = []
    for g in range(2):
        _, k, tp = cv.points(g, 10**9)
        p, q = cv.positives[g], cv.n[g] - cv.positives[g]
        r = {'demographic_parity': [k / cv.n[g]], 'equal_opportunity': [tp / p], 'equalized_odds': [tp / p, (k - tp) / q]}
        rates.append((r[constraint], tp + q - (k - tp)))
    (ra, ca), (rb, cb) = rates
    best = -1
    for i in range(len(ca)):
        lo = max(np.searchsorted(b, a[i] - tol - 1e-12, 'left') for a, b in zip(ra, rb))
        hi = min(np.searchsorted(b, a[i] + tol + 1e-12, 'right') for a, b in zip(ra, rb))
        if hi > lo:
            best = max(best, ca[i] + cb[lo:hi].max())
    return best / cv.n.sum()


@pytest.mark.parametrize('sens,constraint', [('SEX', 'demographic_parity'), ('SEX', 'equal_opportunity'),
                                             ('SEX', 'equalized_odds'), ('RAC1P', 'demographic_parity'),
                                             ('RAC1P', 'equal_opportunity')])
def test_thresholds_meet_the_constraint_as_accurately_as_fairlearn(acs, sens, constraint):
    _, test, _ = acs
    mit = group_thresholds(test, y_true='employed', score='score', sensitive=sens, constraint=constraint, tolerance=TOL)
    d = mit.decide(test, 'score').to_numpy()
    y = test['employed'].to_numpy()
    big = ~test[sens].cast(pl.String).is_in([g.split('=')[1] for g in mit.small_groups]).to_numpy()
    gap = _disparity(y[big], d[big], test[sens].cast(pl.String).to_numpy()[big], constraint)  # fairlearn measures it
    acc = float((d == y).mean())
    fl_acc, fl_gap = _fairlearn(test, sens, constraint, big)
    print(f'\n{sens} {constraint}: mlwork accuracy {acc:.4f} gap {gap:.4f} | fairlearn accuracy {fl_acc:.4f} gap {fl_gap:.4f} '
          f'| before {mit.tradeoff.before:.4f} gap {mit.tradeoff.disparity_before:.4f}')
    assert gap <= TOL + 1e-9 and abs(gap - mit.gap) < 1e-12 and mit.met
    assert abs(acc - mit.tradeoff.after) < 1e-12
    if constraint == 'equalized_odds':  # deterministic thresholds cannot mix two ROC points as fairlearn does
        assert acc >= fl_acc - 0.03
    else:
        assert acc >= fl_acc - 0.01
    if sens == 'SEX':  # two groups: the search is exact, as a brute force over every pair of operating points says
        best = _exact_best_two_groups(test, sens, constraint, TOL)
        print(f'best deterministic accuracy (brute force): {best:.4f}')
        assert acc >= best - 1e-9


def test_tradeoff_matches_the_audits(acs):
    _, test, _ = acs
    mit = group_thresholds(test, y_true='employed', score='score', sensitive='RAC1P', tolerance=0.02)
    frame = test.with_columns(before=(pl.col('score') >= 0.5).cast(pl.Int64), after=mit.decide(test, 'score'))
    audits = [fairness_audit(frame, y_true='employed', y_pred=c, sensitive='RAC1P', n_boot=20) for c in ('before', 'after')]
    t = tradeoff(*audits)
    assert abs(t.before - mit.tradeoff.before) < 1e-12 and abs(t.after - mit.tradeoff.after) < 1e-12
    assert t.disparity_before > 0.1 and mit.tradeoff.disparity_before > 0.1
    assert mit.gap <= 0.02 + 1e-12 and mit.small_groups == ('RAC1P=4',)
    print('\nthreshold mitigation:', mit.tradeoff, '| audits:', t)


def test_reweighing_makes_label_and_group_independent(acs):
    train, _, _ = acs
    with pytest.raises(DataError, match='group RAC1P=4 has 1 positives out of 1 rows'):  # one person: cannot be reweighed
        reweighing(train, y_true='employed', sensitive='RAC1P')
    train = train.filter(pl.col('RAC1P') != '4')
    for sens in ('SEX', 'RAC1P', ['SEX', 'DIS']):
        w = reweighing(train, y_true='employed', sensitive=sens)
        assert w.name == 'weight' and abs(w.sum() - train.height) < 1e-6
        cols = [sens] if isinstance(sens, str) else sens
        by = train.with_columns(w=w).group_by(cols).agg(((pl.col('w') * pl.col('employed')).sum() / pl.col('w').sum()).alias('p'))
        np.testing.assert_allclose(by['p'].to_numpy(), train['employed'].mean(), rtol=0, atol=1e-12)
        # the formula, cell by cell in numpy
        g = train.select(pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator='|')).to_series().to_numpy()
        y = train['employed'].to_numpy()
        i = 7
        want = (g == g[i]).mean() * (y == y[i]).mean() / ((g == g[i]) & (y == y[i])).mean()
        assert abs(w[i] - want) < 1e-12


@pytest.mark.parametrize('sens', ['SEX', 'RAC1P'])
def test_model_retrained_with_weights_trades_accuracy_for_parity(acs, sens):
    train, test, model = acs
    train = train.filter(pl.col('RAC1P') != '4')  # one row: no weight can make its label independent of its group
    w = reweighing(train, y_true='employed', sensitive=sens)
    reweighed = train_model(train.with_columns(w), 'employed', num_boost_round=100, seed=0, weight='weight')
    big = test.filter(pl.len().over(sens) >= 30)
    y, s = big['employed'].to_numpy(), big[sens].cast(pl.String).to_numpy()
    res = {}
    for name, m in (('before', model), ('after', reweighed)):
        d = (m.predict(big.drop('employed', 'score')) >= 0.5).astype(int)
        res[name] = ((d == y).mean(), demographic_parity_difference(y, d, sensitive_features=s))
    print(f"\nreweighing ({sens}): accuracy {res['before'][0]:.4f} -> {res['after'][0]:.4f}, "
          f"demographic parity difference {res['before'][1]:.4f} -> {res['after'][1]:.4f}")
    assert 'weight' not in reweighed.features
    assert abs(res['after'][0] - res['before'][0]) < 0.02  # a small price
    if sens == 'RAC1P':  # a large gap in the labels: reweighing narrows the decisions' gap
        assert res['after'][1] < res['before'][1]


def test_bad_input_is_explained(acs):
    _, test, _ = acs
    small = test.head(500)
    kw = dict(y_true='employed', score='score', sensitive='SEX')
    with pytest.raises(InvalidParameter, match="'constraint' parameter of group_thresholds"):
        group_thresholds(small, constraint='parity', **kw)
    with pytest.raises(DataError, match=r'probabilities in \[0, 1\] \(found range \[-0\.99'):
        group_thresholds(small.with_columns(score=pl.col('score') * 2 - 1), **kw)
    with pytest.raises(DataError, match='look like decisions or labels'):
        group_thresholds(small, **{**kw, 'score': 'employed'})
    with pytest.raises(DataError, match='at least two groups to compare'):
        group_thresholds(small.with_columns(SEX=pl.lit('1')), **kw)
    with pytest.raises(DataError, match='must have no missing values .found 1 nulls'):
        group_thresholds(small.with_columns(SEX=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col('SEX'))), **kw)
    with pytest.raises(DataError, match='`gender` not found'):
        group_thresholds(small, **{**kw, 'sensitive': 'gender'})
    with pytest.raises(DataError, match='needs at least two groups with min_group_size=1000'):
        group_thresholds(small, min_group_size=1000, **kw)
    with pytest.raises(DataError, match='has 0 positives'):
        reweighing(small.with_columns(employed=pl.when(pl.col('SEX') == '1').then(0).otherwise(pl.col('employed'))),
                   y_true='employed', sensitive='SEX')


def test_balanced_accuracy_objective(acs):
    from sklearn.metrics import balanced_accuracy_score
    _, test, _ = acs
    y = test['employed'].to_numpy()
    res = {}
    for objective in ('accuracy', 'balanced_accuracy'):
        m = group_thresholds(test, y_true='employed', score='score', sensitive='RAC1P', objective=objective, tolerance=0.02)
        d = m.decide(test, 'score').to_numpy()
        res[objective] = (float((d == y).mean()), float(balanced_accuracy_score(y, d)))
        assert m.met and m.tradeoff.metric == objective
        assert abs(m.tradeoff.after - res[objective][objective == 'balanced_accuracy']) < 1e-12
    assert res['balanced_accuracy'][1] >= res['accuracy'][1] - 1e-12 and res['accuracy'][0] >= res['balanced_accuracy'][0] - 1e-12
