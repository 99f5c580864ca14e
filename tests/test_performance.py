"""mlwork.evaluation.metrics against scikit-learn as oracle, and the paired bootstrap's coverage."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from mlwork.core import DataError, InvalidParameter
from mlwork.evaluation.metrics import (brier, calibration_bins, compare, evaluate, log_loss, mae, mape, multiclass_metrics,
                                pr_auc, precision_recall_at, rmse, roc_auc, slice_metrics)

TOL = 1e-9


@pytest.fixture(scope='module')
def binary():
    rng = np.random.default_rng(1)
    s = rng.normal(size=700)
    y = (rng.random(700) < 1 / (1 + np.exp(-1.5 * s))).astype(float)
    p = np.round(1 / (1 + np.exp(-(s + rng.normal(scale=0.8, size=700)))), 2)  # rounded: many ties
    return y, np.clip(p, 0.01, 0.99)


def test_binary_metrics_match_sklearn(binary):
    y, p = binary
    assert abs(roc_auc(y, p) - skm.roc_auc_score(y, p)) < TOL
    assert abs(pr_auc(y, p) - skm.average_precision_score(y, p)) < TOL
    assert abs(log_loss(y, p) - skm.log_loss(y, p)) < TOL
    assert abs(brier(y, p) - skm.brier_score_loss(y, p)) < TOL
    for t in (0.3, 0.5, 0.77):
        got = precision_recall_at(y, p, t)
        pred = (p >= t).astype(int)
        assert abs(got['precision'] - skm.precision_score(y, pred)) < TOL
        assert abs(got['recall'] - skm.recall_score(y, pred)) < TOL
        assert abs(got['f1'] - skm.f1_score(y, pred)) < TOL


def test_weighted_metrics_match_sklearn(binary):
    """The bootstrap resamples by integer weights: weighted metrics must equal sklearn's sample_weight versions."""
    y, p = binary
    w = np.random.default_rng(2).multinomial(len(y), np.full(len(y), 1 / len(y))).astype(float)
    assert abs(roc_auc(y, p, w) - skm.roc_auc_score(y, p, sample_weight=w)) < TOL
    assert abs(pr_auc(y, p, w) - skm.average_precision_score(y, p, sample_weight=w)) < TOL
    assert abs(log_loss(y, p, w) - skm.log_loss(y, p, sample_weight=w)) < TOL
    assert abs(brier(y, p, w) - skm.brier_score_loss(y, p, sample_weight=w)) < TOL


@pytest.mark.parametrize('strategy', ['uniform', 'quantile'])
def test_calibration_matches_sklearn(binary, strategy):
    y, p = binary
    p = p + np.random.default_rng(3).uniform(0, 1e-4, len(p))  # break ties at quantile edges
    p = np.clip(p, 0, 1)
    frac, mean = calibration_curve(y, p, n_bins=8, strategy=strategy)
    got = calibration_bins(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(got['fraction_positive'].to_numpy(), frac, atol=TOL)
    np.testing.assert_allclose(got['mean_predicted'].to_numpy(), mean, atol=TOL)
    assert got['rows'].sum() == len(y)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y = rng.gamma(3, 10, 500)
    p = y + rng.normal(scale=5, size=500)
    assert abs(rmse(y, p) - math.sqrt(skm.mean_squared_error(y, p))) < TOL
    assert abs(mae(y, p) - skm.mean_absolute_error(y, p)) < TOL
    assert abs(mape(y, p) - skm.mean_absolute_percentage_error(y, p)) < TOL
    perf = evaluate(y, p, task='regression')
    assert set(perf.metrics) == {'rmse', 'mae', 'mape'} and perf.to_dict()['n'] == 500


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(5)
    k, n = 4, 600
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m, per_class = multiclass_metrics(y, proba, classes=list('abcd'))
    pred = proba.argmax(axis=1)
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    np.testing.assert_allclose(per_class['precision'].to_numpy(), pr, atol=TOL)
    np.testing.assert_allclose(per_class['recall'].to_numpy(), rc, atol=TOL)
    np.testing.assert_allclose(per_class['f1'].to_numpy(), f1, atol=TOL)
    assert per_class['support'].to_list() == sup.tolist()
    assert abs(m['macro_f1'] - skm.f1_score(y, pred, average='macro')) < TOL
    assert abs(m['macro_roc_auc'] - skm.roc_auc_score(y, proba, multi_class='ovr', average='macro')) < TOL
    assert abs(m['log_loss'] - skm.log_loss(y, proba)) < TOL
    assert abs(m['accuracy'] - skm.accuracy_score(y, pred)) < TOL
    for c in range(k):
        assert abs(per_class['roc_auc'][c] - skm.roc_auc_score(y == c, proba[:, c])) < TOL


def test_slice_metrics_match_per_group(binary):
    y, p = binary
    region = np.array(['north', 'south', 'east'])[np.arange(len(y)) % 3]
    df = pl.DataFrame({'region': region, 'y': y, 'p': p})
    out = slice_metrics(df, 'region', target='y', prediction='p')
    assert out['region'].to_list() == ['east', 'north', 'south']
    for row in out.iter_rows(named=True):
        g = region == row['region']
        assert row['rows'] == g.sum()
        assert abs(row['roc_auc'] - skm.roc_auc_score(y[g], p[g])) < TOL
        assert abs(row['brier'] - skm.brier_score_loss(y[g], p[g])) < TOL
    with pytest.raises(DataError, match='`score`'):
        slice_metrics(df, 'region', target='y', prediction='score')


def test_bad_inputs_have_clear_errors():
    with pytest.raises(DataError, match='binary 0/1'):
        roc_auc([0, 1, 2], [.1, .2, .3])
    with pytest.raises(DataError, match='same length'):
        brier([0, 1], [.1, .2, .3])
    with pytest.raises(DataError, match='missing'):
        rmse([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(InvalidParameter, match="'metric' parameter of compare"):
        compare([0, 1], [.1, .2], [.2, .1], metric='accuracy')


def _coverage(truth: float, draw, metric: str, reps: int) -> int:
    hits = 0
    for r in range(reps):
        y, a, b = draw(np.random.default_rng(1000 + r))
        c = compare(y, a, b, metric=metric, n_boot=400, seed=r)
        hits += c.lower <= truth <= c.upper
    return hits


def test_bootstrap_coverage_rmse_known_difference():
    """y = s + e; predictors s + noise(σ1), s + noise(σ2): true RMSEs are sqrt(σ² + σe²) exactly."""
    se, s1, s2, n = 1.0, 1.0, 0.8, 400

    def draw(rng):
        s = rng.normal(size=n)
        y = s + rng.normal(scale=se, size=n)
        return y, s + rng.normal(scale=s1, size=n), s + rng.normal(scale=s2, size=n)

    truth = math.sqrt(s2**2 + se**2) - math.sqrt(s1**2 + se**2)
    reps = 80
    hits = _coverage(truth, draw, 'rmse', reps)
    from scipy.stats import binom
    lo, hi = binom.ppf(0.001, reps, 0.95), binom.ppf(0.999, reps, 0.95)  # 99.8 % acceptance band under exact 95 %
    assert lo - 2 <= hits <= reps, (hits, lo, hi)  # percentile bootstrap may under-cover slightly at n=400


def test_bootstrap_coverage_auc_known_difference():
    """Binary outcome from a latent score; the true AUC difference is estimated once from 400k rows."""
    n = 500

    def draw(rng, n=n):
        s = rng.normal(size=n)
        y = (rng.random(n) < 1 / (1 + np.exp(-2 * s))).astype(float)
        return y, s + rng.normal(scale=1.0, size=n), s + rng.normal(scale=0.6, size=n)

    y, a, b = draw(np.random.default_rng(7), n=400_000)
    truth = roc_auc(y, b) - roc_auc(y, a)  # Monte-Carlo error ~1e-3, far below the CI half-width (~0.02)
    reps = 60
    hits = _coverage(truth, draw, 'roc_auc', reps)
    from scipy.stats import binom
    lo = binom.ppf(0.001, reps, 0.95)
    assert lo - 2 <= hits <= reps, (hits, lo)


def test_identical_models_interval_contains_zero(binary):
    y, p = binary
    c = compare(y, p, p, metric='log_loss', n_boot=200)
    assert c.lower <= 0 <= c.upper and c.better == 'undecided' and c.difference == 0
    # nearly identical models: still undecided, interval around zero
    p2 = np.clip(p + np.random.default_rng(9).normal(scale=1e-3, size=len(p)), 0.001, 0.999)
    c = compare(y, p, p2, metric='roc_auc', n_boot=300)
    assert c.lower <= 0 <= c.upper and c.better == 'undecided'


def test_compare_direction_seed_and_rendering(binary):
    y, p = binary
    worse = np.clip(p + np.random.default_rng(8).normal(scale=0.25, size=len(p)), 0.01, 0.99)
    c1 = compare(y, p, worse, metric='brier', n_boot=300, seed=3)
    assert c1.better == 'champion' and c1.difference > 0 and c1.lower > 0  # loss went up
    assert c1.text.startswith('champion is better by')
    c2 = compare(y, worse, p, metric='brier', n_boot=300, seed=3)
    assert c2.better == 'challenger' and c2.text.startswith('challenger is better by')
    assert compare(y, p, worse, metric='brier', n_boot=300, seed=3).to_dict() == c1.to_dict()
    d = c1.to_dict()
    assert set(d) >= {'difference', 'lower', 'upper', 'better', 'text'} and '<table' in c1._repr_html_()
    # pr_auc goes through the generic (looped) bootstrap path
    c3 = compare(y, worse, p, metric='pr_auc', n_boot=150)
    assert c3.better == 'challenger'


def test_paired_interval_narrower_than_unpaired(binary):
    """Pairing cancels the shared noise: the paired CI is narrower than independent resampling of each model."""
    y, p = binary
    other = np.clip(p + np.random.default_rng(10).normal(scale=0.05, size=len(p)), 0.01, 0.99)
    c = compare(y, p, other, metric='roc_auc', n_boot=400)
    rng = np.random.default_rng(0)
    n = len(y)
    d = [roc_auc(y[j], other[j]) - roc_auc(y[i], p[i]) for i, j in
         ((rng.integers(0, n, n), rng.integers(0, n, n)) for _ in range(300))]
    lo, hi = np.quantile(d, [0.025, 0.975])
    assert (c.upper - c.lower) < 0.5 * (hi - lo)
