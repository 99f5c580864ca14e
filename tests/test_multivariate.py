"""Multivariate drift (mlwork.drift.multivariate) against independent oracles: a direct O(n²) MMD², sklearn's AUC,
binomial bounds on false alarms, and drifts that per-column tests miss."""
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlwork.core import DataError, InvalidParameter, NotFittedError
from mlwork.drift.multivariate import DomainClassifierDrift, MMDDrift, MultivariateResult
from mlwork.synthetic import Drift, generate

ALPHA, REPS = 0.05, 40
# a false-alarm count above this has probability < 0.5 % under a correct level-alpha test
MAX_ALARMS = int(stats.binom.ppf(0.995, REPS, ALPHA))


def _corr_frame(n: int, rho: float, rng: np.random.Generator) -> pl.DataFrame:
    x1 = rng.standard_normal(n)
    x2 = rho * x1 + math.sqrt(1 - rho ** 2) * rng.standard_normal(n)
    return pl.DataFrame({'x1': x1, 'x2': x2, 'g': rng.choice(['a', 'b', 'c'], n)})


def _mmd2_oracle(X: np.ndarray, Y: np.ndarray, sigma: float) -> float:
    "Unbiased MMD² by explicit double loops."
    k = lambda a, b: math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma ** 2))
    n, m = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def test_mmd2_matches_direct_computation():
    rng = np.random.default_rng(0)
    ref = pl.DataFrame({'a': rng.normal(5, 2, 30), 'b': rng.exponential(3, 30)})
    cur = pl.DataFrame({'a': rng.normal(6, 2, 25), 'b': rng.exponential(3, 25)})
    det = MMDDrift(n_permutations=20).fit(ref)
    r = det.score(cur)
    # independent standardisation and median heuristic
    R, C = ref.to_numpy(), cur.to_numpy()
    mu, sd = R.mean(0), R.std(0)
    Xs, Ys = (R - mu) / sd, (C - mu) / sd
    sigma = float(np.median([np.linalg.norm(Xs[i] - Xs[j]) for i in range(30) for j in range(i + 1, 30)]))
    assert det.bandwidth_ == pytest.approx(sigma, rel=1e-10)
    assert abs(r.statistic - _mmd2_oracle(Xs, Ys, sigma)) < 1e-10
    assert r.test == 'mmd' and 0 < r.p_value <= 1 and r.n_reference == 30 and r.n_current == 25


def test_mmd_categorical_one_hot_matches_oracle():
    rng = np.random.default_rng(1)
    ref = pl.DataFrame({'x': rng.standard_normal(20), 'g': rng.choice(['a', 'b'], 20)})
    cur = pl.DataFrame({'x': rng.standard_normal(15), 'g': rng.choice(['a', 'b', 'z'], 15)})
    det = MMDDrift(n_permutations=10).fit(ref)
    r = det.score(cur)
    def emb(f):
        x = (f['x'].to_numpy() - ref['x'].mean()) / ref['x'].std(ddof=0)
        g = f['g'].to_numpy()
        return np.column_stack([x, np.zeros(len(x)), g == 'a', g == 'b', ~np.isin(g, ['a', 'b'])]).astype(float)
    assert abs(r.statistic - _mmd2_oracle(emb(ref), emb(cur), det.bandwidth_)) < 1e-10


def test_permutation_null_equals_recomputed_statistics():
    "The blocked statistics, for every labelling and tile size, equal MMD² by explicit loops on the relabelled samples."
    from mlwork.drift.multivariate import _labellings, _mmd2_blocked
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((23, 3))
    A = _labellings(10, 23, 7, rng)
    assert (A.sum(axis=0) == 10).all() and (A[:10, 0] == 1).all()
    for rows, workers in ((4, 1), (6, 2), (23, 1), (100, 4)):
        got = _mmd2_blocked(np, Z, 10, 0.5, A.astype(float), rows, workers)
        for j in range(A.shape[1]):
            X, Y = Z[A[:, j] == 1], Z[A[:, j] == 0]
            assert abs(got[j] - _mmd2_oracle(X, Y, 1.0)) < 1e-12


def _credit_pair(seed: int, n: int = 150, drift=None):
    ref = generate('credit', n_rows=n, seed=2 * seed)
    cur = generate('credit', n_rows=n, seed=2 * seed + 1, drift=drift)
    return ref.frame, cur.frame, ref.features


def test_false_alarm_rate_no_drift():
    mmd_alarms = dc_alarms = 0
    for i in range(REPS):
        ref, cur, feats = _credit_pair(100 + i)
        mmd_alarms += MMDDrift(n_permutations=100, seed=i).fit(ref, feats).score(cur).decision
        dc_alarms += DomainClassifierDrift(n_folds=3, num_boost_round=20, seed=i).fit(ref, feats).score(cur).decision
    assert mmd_alarms <= MAX_ALARMS, mmd_alarms
    assert dc_alarms <= MAX_ALARMS, dc_alarms


def test_detects_injected_income_drift():
    ref, cur, feats = _credit_pair(7, n=400, drift=Drift(('income',), 0.5))
    m = MMDDrift(n_permutations=100).fit(ref, feats).score(cur)
    d = DomainClassifierDrift(n_folds=3, num_boost_round=50).fit(ref, feats).score(cur)
    assert m.decision and d.decision, (m, d)
    assert d.feature_importance['feature'][0] == 'income'
    assert d.feature_importance['share'].sum() == pytest.approx(1.0)
    assert d.feature_importance['gain'].is_sorted(descending=True)


def test_detects_correlation_flip_that_marginal_tests_miss():
    rng = np.random.default_rng(3)
    ref, cur = _corr_frame(500, 0.8, rng), _corr_frame(500, -0.8, rng)
    # marginals unchanged by construction: the per-column KS test sees nothing
    for c in ('x1', 'x2'):
        assert stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue > 0.01
    m = MMDDrift(n_permutations=100).fit(ref).score(cur)
    d = DomainClassifierDrift(n_folds=3, num_boost_round=50).fit(ref).score(cur)
    assert m.decision and m.p_value < 0.02, m
    assert d.decision and d.statistic > 0.7, d
    assert set(d.feature_importance['feature'][:2]) == {'x1', 'x2'}


def test_auc_equals_sklearn_on_oof_scores():
    rng = np.random.default_rng(4)
    ref, cur = _corr_frame(200, 0.8, rng), _corr_frame(160, 0.3, rng)
    det = DomainClassifierDrift(n_folds=4, num_boost_round=20).fit(ref)
    r = det.score(cur)
    assert r.statistic == pytest.approx(roc_auc_score(det.oof_labels_, det.oof_scores_), abs=1e-12)
    assert (det.oof_labels_ == 0).sum() == 200 and (det.oof_labels_ == 1).sum() == 160
    assert r.p_value == pytest.approx(min(1.0, 4 * min(r.details['fold_p_values'])))


def test_deterministic_and_subsampled():
    rng = np.random.default_rng(5)
    ref, cur = _corr_frame(300, 0.5, rng), _corr_frame(300, 0.5, rng)
    a = DomainClassifierDrift(n_folds=3, num_boost_round=10, max_rows=100, seed=3).fit(ref).score(cur)
    b = DomainClassifierDrift(n_folds=3, num_boost_round=10, max_rows=100, seed=3).fit(ref).score(cur)
    assert a.to_dict() == b.to_dict() and a.n_reference == 100 and a.n_current == 100
    m1 = MMDDrift(n_permutations=30, max_rows=50, seed=1).fit(ref).score(cur)
    m2 = MMDDrift(n_permutations=30, max_rows=50, seed=1).fit(ref).score(cur)
    assert m1.to_dict() == m2.to_dict() and m1.n_reference == 50


def test_nulls_and_unseen_categories_are_handled():
    rng = np.random.default_rng(6)
    ref = _corr_frame(200, 0.5, rng).with_columns(pl.col('g').cast(pl.Enum(['a', 'b', 'c', 'd'])))
    cur = _corr_frame(200, 0.5, rng).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col('x1')).alias('x1'),
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit('d')).otherwise(pl.col('g')).cast(pl.Enum(['a', 'b', 'c', 'd'])).alias('g'))
    m = MMDDrift(n_permutations=50).fit(ref).score(cur)
    d = DomainClassifierDrift(n_folds=3, num_boost_round=20).fit(ref).score(cur)
    assert m.decision and d.decision
    assert isinstance(MultivariateResult, type) and 'feature_importance' in d.to_dict()
    assert 'drift detected' in d._repr_html_() and '<table' in d._repr_html_()


def test_errors():
    ref = pl.DataFrame({'x': np.arange(20.0), 't': ['s'] * 20})
    with pytest.raises(InvalidParameter, match="'n_permutations' parameter of MMDDrift must be an int >= 1"):
        MMDDrift(n_permutations=0).fit(ref)
    with pytest.raises(InvalidParameter, match="'alpha' parameter of DomainClassifierDrift"):
        DomainClassifierDrift(alpha=1.5).fit(ref)
    with pytest.raises(NotFittedError):
        MMDDrift().score(ref)
    with pytest.raises(DataError, match='column `x` must be numeric'):
        MMDDrift().fit(ref).score(ref.with_columns(pl.col('x').cast(pl.String)))
    with pytest.raises(DataError, match='column `nope` not found in reference'):
        DomainClassifierDrift().fit(ref, ['nope'])
    with pytest.raises(DataError, match='at least 10 rows'):
        MMDDrift().fit(ref).score(ref.head(5))


def test_cupy_backend_is_clear_when_missing():
    try:
        import cupy  # noqa: F401
        pytest.skip('cupy is installed here')
    except Exception:
        pass
    with pytest.raises(InvalidParameter, match="backend='cupy' needs CuPy"):
        MMDDrift(backend='cupy').fit(pl.DataFrame({'x': np.arange(20.0)}))
