"""Label-free performance estimation (CBPE): isotonic calibration and weighted AUC against scikit-learn,
expected metrics against Monte-Carlo label draws from known probabilities, band coverage, the ACS
2016–2018 estimates against realised values, input shapes and bad inputs."""
from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mlwork.core import DataError, InvalidParameter, NotFittedError
from mlwork.datasets import load_acs, load_acs_labels
from mlwork.drift.estimate import CBPE, EstimateResult, expected_metrics, isotonic_fit, isotonic_predict, weighted_roc_auc
from mlwork.models.train import train_model


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _synthetic(n, rng, shift=0.0):
    "Scores of an over-confident model and labels drawn from the known true P(positive)."
    z = rng.normal(shift, 1.5, n)
    score = _sigmoid(2 * z)           # what the model says
    p_true = _sigmoid(z)              # the truth: the model is over-confident
    return score, p_true, (rng.random(n) < p_true).astype(int)


# --- oracles: scikit-learn -------------------------------------------------------------------

@pytest.mark.parametrize('seed', range(6))
def test_isotonic_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 2000))
    x = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # ties at every rounding
    y = (rng.random(n) < _sigmoid(x)).astype(float)
    w = rng.random(n) if seed % 2 else None
    knots = isotonic_fit(x, y, w)
    grid = np.linspace(x.min() - 1, x.max() + 1, 500)
    oracle = IsotonicRegression(out_of_bounds='clip').fit(x, y, sample_weight=w)
    np.testing.assert_allclose(isotonic_predict(knots, grid), oracle.predict(grid), atol=1e-12)
    assert np.all(np.diff(knots[1]) >= 0)


@pytest.mark.parametrize('seed', range(5))
def test_weighted_auc_equals_sklearn_on_duplicated_rows(seed):
    rng = np.random.default_rng(seed)
    n = 300
    s = np.round(rng.random(n), 2)  # many ties
    p = rng.random(n)
    dup_s = np.concatenate([s, s]); dup_y = np.r_[np.ones(n), np.zeros(n)]; dup_w = np.concatenate([p, 1 - p])
    assert weighted_roc_auc(s, p, 1 - p) == pytest.approx(roc_auc_score(dup_y, dup_s, sample_weight=dup_w), abs=1e-12)
    assert expected_metrics(s, p, metrics=('roc_auc',))['roc_auc'] == pytest.approx(
        roc_auc_score(dup_y, dup_s, sample_weight=dup_w), abs=1e-12)


def test_realised_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    s, _, y = _synthetic(3000, rng)
    got = expected_metrics(s, y, threshold=0.4)
    pred = (s >= 0.4).astype(int)
    assert got['accuracy'] == pytest.approx(accuracy_score(y, pred))
    assert got['precision'] == pytest.approx(precision_score(y, pred))
    assert got['recall'] == pytest.approx(recall_score(y, pred))
    assert got['f1'] == pytest.approx(f1_score(y, pred))
    assert got['roc_auc'] == pytest.approx(roc_auc_score(y, s))


# --- statistics: known calibrated probabilities ----------------------------------------------

def test_expected_metrics_are_the_mean_over_label_draws():
    "With p known, the expected accuracy/AUC equal the mean realised value over Bernoulli(p) label sets."
    rng = np.random.default_rng(2)
    s, p, _ = _synthetic(2000, rng)
    exp = expected_metrics(s, p)
    draws = [expected_metrics(s, (rng.random(len(p)) < p).astype(float)) for _ in range(300)]
    for m in ('accuracy', 'roc_auc', 'f1', 'precision', 'recall'):
        vals = np.array([d[m] for d in draws])
        se = vals.std(ddof=1) / np.sqrt(len(vals))
        # accuracy is exactly linear in p; ratios (AUC, F1…) are expectations of ratios: allow their O(1/n) bias
        assert abs(vals.mean() - exp[m]) < 4 * se + (0 if m == 'accuracy' else 2e-3), (m, vals.mean(), exp[m])


def test_cbpe_recovers_the_expectation_under_covariate_shift():
    "Calibrated on one score distribution, the estimate on a shifted one matches the truth, not the reference."
    rng = np.random.default_rng(3)
    ref_s, _, ref_y = _synthetic(20_000, rng)
    cur_s, cur_p, cur_y = _synthetic(20_000, rng, shift=1.2)
    cb = CBPE(metrics=('roc_auc', 'accuracy', 'f1'), n_chunks=20).fit(ref_s, ref_y)
    res = cb.estimate(cur_s, labels=cur_y).frame
    truth = expected_metrics(cur_s, cur_p, metrics=('roc_auc', 'accuracy', 'f1'))
    ref_perf = expected_metrics(ref_s, ref_y, metrics=('roc_auc', 'accuracy', 'f1'))
    for r in res.iter_rows(named=True):
        assert abs(r['estimate'] - truth[r['metric']]) < 0.01, r
        assert abs(r['estimate'] - r['realised']) < 0.02, r
    assert abs(ref_perf['f1'] - truth['f1']) > 0.05  # the shift did change performance: the test has teeth


def test_band_covers_realised_values():
    rng = np.random.default_rng(4)
    ref_s, _, ref_y = _synthetic(5000, rng)
    cb = CBPE(metrics=('roc_auc', 'accuracy', 'f1'), n_chunks=30).fit(ref_s, ref_y)
    cur_s, _, cur_y = _synthetic(30 * 500, rng, shift=0.5)
    f = cb.estimate(cur_s, labels=cur_y, windows=np.repeat(np.arange(30), 500)).frame
    assert f.height == 90
    coverage = f['within_band'].mean()
    assert coverage >= 0.9, coverage  # nominal ±3σ: about 0.99
    assert (f['lower'] <= f['estimate']).all() and (f['estimate'] <= f['upper']).all()
    # and the band is not vacuous
    assert (f['upper'] - f['lower']).max() < 0.25


# --- the ACS employment data: 2015 model, estimates for 2016–2018 ----------------------------

@pytest.fixture(scope='module')
def acs_estimate():
    d = load_acs(2015)
    feats = [c for c in d.columns if c not in ('id', 'year', 'employed')]
    ref_mask = pl.Series(np.random.default_rng(0).random(d.height) < 0.3)
    train, ref = d.filter(~ref_mask), d.filter(ref_mask)
    model = train_model(train, 'employed', task='binary', features=feats, num_boost_round=100,
                        early_stopping_rounds=15, params={'learning_rate': 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # a handful of unseen RAC1P categories become missing
        cb = CBPE(metrics=('roc_auc', 'accuracy', 'precision', 'recall', 'f1'), n_chunks=20).fit(
            model.predict(ref.select(feats)), ref['employed'].to_numpy())
        frames = []
        for year in (2016, 2017, 2018):
            x = load_acs(year, labels=False)
            frames.append(pl.DataFrame({'window': year, 'score': model.predict(x.select(feats))}).with_columns(id=x['id']))
    scores = pl.concat(frames)
    labels = load_acs_labels([2016, 2017, 2018]).select('id', 'year', label='employed')
    joined = scores.join(labels, left_on=['id', 'window'], right_on=['id', 'year'], how='left')
    assert joined['label'].null_count() == 0
    return cb, cb.estimate(scores.select('window', 'score')), cb.estimate(joined)


def test_acs_estimates_within_002_of_realised(acs_estimate):
    _, _, res = acs_estimate
    f = res.frame
    assert sorted(f['window'].unique().to_list()) == [2016, 2017, 2018]
    assert f.height == 15
    err = (f['estimate'] - f['realised']).abs()
    assert err.max() < 0.02, f
    assert f['within_band'].mean() >= 0.8, f


def test_acs_estimate_needs_no_labels(acs_estimate):
    _, no_labels, with_labels = acs_estimate
    assert no_labels.frame['realised'].null_count() == no_labels.frame.height
    np.testing.assert_allclose(no_labels.frame['estimate'].to_numpy(), with_labels.frame['estimate'].to_numpy())


# --- API: shapes, results, determinism, errors ------------------------------------------------

@pytest.fixture(scope='module')
def small():
    rng = np.random.default_rng(5)
    ref_s, _, ref_y = _synthetic(2000, rng)
    cur_s, _, cur_y = _synthetic(900, rng)
    return CBPE(n_chunks=10, n_calibration_draws=5).fit(ref_s, ref_y), cur_s, cur_y


def test_input_shapes_agree(small):
    cb, s, y = small
    a = cb.estimate([s[:300], s[300:]], labels=[y[:300], y[300:]]).frame
    b = cb.estimate({'x': s[:300], 'y': s[300:]}, labels={'x': y[:300], 'y': y[300:]}).frame
    c = cb.estimate(s, labels=y, windows=np.r_[np.zeros(300), np.ones(600)]).frame
    d = cb.estimate(pl.DataFrame({'w': ['x'] * 300 + ['y'] * 600, 'p': s, 'l': y}), score_column='p',
                    label_column='l', window_column='w').frame
    for other in (b, c, d):
        np.testing.assert_allclose(a['estimate'].to_numpy(), other['estimate'].to_numpy())
        np.testing.assert_allclose(a['realised'].to_numpy(), other['realised'].to_numpy())
    chunks = CBPE(chunk_size=400, n_chunks=10, n_calibration_draws=5).fit(cb.reference_scores_, cb.reference_labels_).estimate(s)
    assert chunks.frame.unique('window', maintain_order=True)['rows'].to_list() == [400, 400, 100]


def test_result_renders_and_serialises(small):
    cb, s, y = small
    res = cb.estimate(s, labels=y)
    assert isinstance(res, EstimateResult)
    d = json.loads(json.dumps(res.to_dict()))
    assert d['threshold'] == 0.5 and len(d['rows']) == 3 and {r['metric'] for r in d['rows']} == {'roc_auc', 'accuracy', 'f1'}
    assert '<table' in res._repr_html_()
    fig = res.plot()
    assert len(fig.axes) == 3


def test_deterministic(small):
    cb, s, y = small
    again = CBPE(n_chunks=10, n_calibration_draws=5).fit(cb.reference_scores_, cb.reference_labels_)
    assert again.estimate(s).frame.equals(cb.estimate(s).frame)


def test_bad_inputs(small):
    cb, s, y = small
    with pytest.raises(NotFittedError, match='not fitted'):
        CBPE().estimate(s)
    with pytest.raises(InvalidParameter, match="'threshold' parameter of CBPE"):
        CBPE(threshold='high').fit(s, y)
    with pytest.raises(InvalidParameter, match="'metrics' parameter of CBPE"):
        CBPE(metrics='f1').fit(s, y)
    with pytest.raises(DataError, match='both classes'):
        CBPE().fit(s, np.ones_like(y))
    with pytest.raises(DataError, match='one label per score'):
        CBPE().fit(s, y[:-1])
    with pytest.raises(DataError, match='missing or infinite'):
        cb.estimate(np.r_[s, np.nan])
    with pytest.raises(DataError, match='binary labels'):
        cb.estimate(s, labels=y * 3)
    with pytest.raises(DataError, match='one window key per score'):
        cb.estimate(s, windows=np.zeros(3))
    with pytest.raises(DataError, match='`window` not found'):
        cb.estimate(pl.DataFrame({'score': s}))
    with pytest.raises(DataError, match='needs 2 or more'):
        cb.estimate([s, s[:1]])


def test_undefined_metric_is_nan_not_a_band(small):
    "Precision with no predicted positive is undefined: the estimate and its band are NaN, not [0, 1]."
    cb, s, y = small
    f = CBPE(metrics=('precision', 'accuracy'), threshold=2.0, n_chunks=10, n_calibration_draws=5).fit(
        cb.reference_scores_, cb.reference_labels_).estimate(s, labels=y).frame
    prec = f.filter(pl.col('metric') == 'precision').row(0, named=True)
    assert np.isnan(prec['estimate']) and np.isnan(prec['lower']) and np.isnan(prec['upper'])
    assert prec['realised'] is None and prec['within_band'] is None
    acc = f.filter(pl.col('metric') == 'accuracy').row(0, named=True)
    assert acc['realised'] == pytest.approx(1 - y.mean())
