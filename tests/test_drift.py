"""Statistics of mlwork.drift.univariate against independent oracles (scipy), false-alarm rates under no drift, power under injected drift."""
import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlwork.core import InvalidParameter, NotFittedError, DataError
from mlwork.drift.power import drift_benchmark
from mlwork.drift.univariate import DriftDetector, adjust_pvalues, hellinger, js_distance, psi, total_variation
from mlwork.synthetic import Drift, generate

CREDIT = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount',
          'loan_purpose', 'employment', 'region', 'sex']
NUMERIC = CREDIT[:6]
CATEGORICAL = CREDIT[6:]


def _row(result, column):
    return result.columns.filter(pl.col('column') == column).row(0, named=True)


def _binomial_bound(n, p=0.05, q=0.999):
    "Largest count of alarms compatible with a rate of at most p in n trials (one-sided, 0.1 % level)."
    return int(stats.binom.ppf(q, n, p))


@pytest.mark.parametrize('n_ref,n_cur,kind', [(500, 300, 'float'), (2_000, 2_000, 'int'), (30_000, 12_000, 'float'),
                                               (20_000, 25_000, 'int')])
def test_ks_and_wasserstein_match_scipy(n_ref, n_cur, kind):
    rng = np.random.default_rng(n_ref)
    if kind == 'float':
        a, b = rng.normal(size=n_ref), rng.normal(0.03, 1.05, size=n_cur)
    else:  # ties everywhere
        a, b = rng.poisson(5.0, n_ref), rng.poisson(5.1, n_cur)
    # nulls and NaN are set aside, as the oracle sees only the finite values
    ref = pl.DataFrame({'x': np.append(a.astype(float), [np.nan, np.inf])})
    cur = pl.DataFrame({'x': pl.Series(np.append(b.astype(float), [0.0])).set(pl.Series([False] * n_cur + [True]), None)})
    row = _row(DriftDetector().fit(ref).score(cur), 'x')
    oracle = stats.ks_2samp(a, b)  # method='auto'
    assert (row['n_reference'], row['n_current'], row['missing_reference'], row['missing_current']) == (n_ref, n_cur, 2, 1)
    assert row['method'] == ('exact' if max(n_ref, n_cur) <= 10_000 else 'asymp')
    assert row['statistic'] == pytest.approx(oracle.statistic, rel=1e-12)
    assert row['p_value'] == pytest.approx(oracle.pvalue, rel=1e-9, abs=1e-300)
    assert row['effect_value'] == pytest.approx(stats.wasserstein_distance(a, b) / np.std(a), rel=1e-9)


def test_ks_method_asymp_matches_scipy():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=800), rng.normal(0.1, 1, size=900)
    row = _row(DriftDetector(ks_method='asymp').fit(pl.DataFrame({'x': a})).score(pl.DataFrame({'x': b})), 'x')
    assert row['p_value'] == pytest.approx(stats.ks_2samp(a, b, method='asymp').pvalue, rel=1e-9)


def test_ks_pvalue_equals_scipy_kstwo_on_random_sizes_and_statistics():
    "The fast Birnbaum–Tingey sum equals scipy (kstwo.sf / special.smirnov) where scipy sums it term by term, and elsewhere it is scipy."
    from scipy import special
    from mlwork.drift.kernels import ks_pvalue, smirnov_sf
    rng = np.random.default_rng(11)
    # every term summed below 20,000 terms; every k-th term above (scipy takes up to 1.2 s per call there: 20 of those)
    sizes = np.r_[rng.integers(141, 20_000, 280), rng.integers(20_000, 1_000_001, 20)]
    for i, n in enumerate(sizes.tolist()):
        x = math.sqrt(rng.uniform(2.2, min(300.0, 0.2 * n)) / n)  # the branch: 2.2 <= n·x² < 370 and x < 0.5
        want, got = float(special.smirnov(n, x)), smirnov_sf(n, x)
        assert abs(got - want) <= 1e-10 * want, (n, x, got, want)
        if i % 20 == 0:
            assert ks_pvalue(x, float(n)) == pytest.approx(float(stats.kstwo.sf(x, n)), rel=1e-10, abs=0)
    for n, x in ((100, 0.2), (5_000, 0.01), (2_000_000, 0.003), (50_000, 0.7), (50_000, 0.0001)):  # scipy's own branches
        assert ks_pvalue(x, float(n)) == float(np.clip(stats.kstwo.sf(x, n), 0, 1))


def test_ks_p_value_at_one_million_rows_matches_scipy_ks_2samp():
    "A mildly drifted column at 1 M rows per side (the branch that was slow) against ks_2samp itself."
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(1_000_000), rng.standard_normal(1_000_000) + 0.02
    res = DriftDetector().fit(pl.DataFrame({'x': a})).score(pl.DataFrame({'x': b})).columns.row(0, named=True)
    want = stats.ks_2samp(a, b)
    assert res['statistic'] == pytest.approx(want.statistic, rel=1e-12)
    assert 0 < want.pvalue < 0.02 and res['p_value'] == pytest.approx(want.pvalue, rel=1e-10)


def test_fitted_index_and_quantile_functions_equal_the_merge_and_scipy():
    "KS from the reference index and Wasserstein from quantile functions: the same numbers as the full merge and scipy."
    from mlwork.drift.kernels import ks_index, ks_statistic_indexed, ks_wasserstein, quantile_grid, wasserstein_sorted
    rng = np.random.default_rng(21)
    draws = [lambda k, s: rng.normal(s, 1, k), lambda k, s: rng.poisson(3 + 2 * s, k), lambda k, s: rng.integers(0, 4 + (s > 0), k),
             lambda k, s: rng.lognormal(s, 1, k), lambda k, s: np.round(rng.normal(s, 1, k), 1)]
    fallbacks = 0
    for t in range(150):
        n1 = int(rng.integers(2, 5000)); n2 = int(rng.choice([n1, rng.integers(2, 5000)]))
        draw, shift = draws[t % len(draws)], float(rng.choice([0.0, 0.05, 0.5]))
        a, b = draw(n1, 0.0).astype(float), draw(n2, shift).astype(float)
        r, c = np.sort(a), np.sort(b)
        d = ks_statistic_indexed(r, c, ks_index(r))
        d_merge, _, _, w_merge = ks_wasserstein(r, c, method='asymp')
        fallbacks += d is None
        assert d is None or d == d_merge, (t, d, d_merge)
        assert d is None or abs(d - stats.ks_2samp(a, b).statistic) < 1e-12
        w = wasserstein_sorted(r, c)
        assert abs(w - stats.wasserstein_distance(a, b)) <= 1e-12 * max(1.0, w), (t, w)
        assert abs(w - w_merge) <= 1e-12 * max(1.0, w)
    assert fallbacks <= 15, fallbacks  # the index path, not the merge, decides almost every case
    span_ref, span_cur, du = quantile_grid(4, 6)  # breakpoints 1/6, 1/4, 1/3, 1/2, 2/3, 3/4, 5/6, 1
    assert np.repeat(np.arange(4), span_ref).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.repeat(np.arange(6), span_cur).tolist() == [0, 1, 1, 2, 3, 4, 4, 5]
    assert du.tolist() == pytest.approx([1 / 6, 1 / 12, 1 / 12, 1 / 6, 1 / 6, 1 / 12, 1 / 12, 1 / 6], abs=1e-15)
    assert du.sum() == pytest.approx(1.0, abs=1e-15) and len(du) == 8


def test_detector_on_large_unequal_samples_matches_scipy():
    "Through the detector (the fitted path) at 200 k vs 150 k rows, with ties and without: scipy's statistic, p-value and distance."
    rng = np.random.default_rng(8)
    ref = pl.DataFrame({'x': rng.normal(size=200_000), 'k': rng.poisson(4, 200_000).astype(float)})
    cur = pl.DataFrame({'x': rng.normal(0.01, 1, 150_000), 'k': rng.poisson(4.05, 150_000).astype(float)})
    det = DriftDetector().fit(ref)
    for _ in range(2):  # the second score reuses the cached quantile grid
        res = det.score(cur).columns
        for col in ('x', 'k'):
            row = res.filter(pl.col('column') == col).row(0, named=True)
            a, b = ref[col].to_numpy(), cur[col].to_numpy()
            want = stats.ks_2samp(a, b)
            assert row['statistic'] == pytest.approx(want.statistic, rel=1e-12)
            assert row['p_value'] == pytest.approx(want.pvalue, rel=1e-10)
            assert row['effect_value'] * a.std() == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)


def test_chi2_and_category_distances_match_oracles_with_unseen_categories():
    rng = np.random.default_rng(3)
    ref = pl.DataFrame({'c': rng.choice(['a', 'b', 'c', 'd'], 5_000, p=[0.4, 0.3, 0.2, 0.1])})
    cur_values = rng.choice(['a', 'b', 'c', 'd', 'new1', 'new2'], 3_000, p=[0.35, 0.3, 0.2, 0.05, 0.07, 0.03])
    cur = pl.DataFrame({'c': pl.Series(cur_values).cast(pl.Enum(['a', 'b', 'c', 'd', 'new1', 'new2', 'never']))})
    row = _row(DriftDetector().fit(ref).score(cur), 'c')
    cats = ['a', 'b', 'c', 'd', 'new1', 'new2']
    r = np.array([(ref['c'] == k).sum() for k in cats], float)
    c = np.array([(cur_values == k).sum() for k in cats], float)
    oracle = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert row['statistic'] == pytest.approx(oracle.statistic, rel=1e-9)
    assert row['p_value'] == pytest.approx(oracle.pvalue, rel=1e-9, abs=1e-300)
    assert row['unseen'] == ['new1', 'new2'] and row['unseen_count'] == 2
    assert row['unseen_mass'] == pytest.approx(c[4:].sum() / c.sum())
    p, q = r / r.sum(), c / c.sum()
    assert row['tv'] == pytest.approx(0.5 * np.abs(p - q).sum()) and row['effect_value'] == row['tv']
    assert row['js'] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
    pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert row['psi'] == pytest.approx(np.sum((qe - pe) * np.log(qe / pe)), rel=1e-9)
    assert 'unseen in reference' in row['why']


def test_distances_match_independent_formulas():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.full(7, 5.0)), rng.dirichlet(np.full(7, 5.0))  # no proportion near PSI_EPSILON
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
        assert hellinger(p, q) == pytest.approx(math.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)), rel=1e-9)
        assert total_variation(p, q) == pytest.approx(0.5 * np.abs(p - q).sum())
        assert psi(p, q) == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p), rel=1e-9)  # PSI = symmetric KL


def test_numeric_binned_distances_use_reference_deciles():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=4_000), rng.normal(0.5, 1, size=3_000)
    row = _row(DriftDetector().fit(pl.DataFrame({'x': a})).score(pl.DataFrame({'x': b})), 'x')
    edges = np.quantile(a, np.arange(1, 10) / 10)
    p = np.bincount(np.digitize(a, edges, right=True), minlength=10) / a.size
    q = np.bincount(np.digitize(b, edges, right=True), minlength=10) / b.size
    assert row['js'] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
    assert row['hellinger'] == pytest.approx(math.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)), rel=1e-9)
    assert row['psi'] == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p), rel=1e-9)


def test_bh_and_bonferroni_match_scipy():
    rng = np.random.default_rng(1)
    for m in (1, 2, 10, 57):
        p = rng.random(m) ** 3
        assert np.allclose(adjust_pvalues(p, 'bh'), stats.false_discovery_control(p, method='bh'), rtol=1e-12)
        assert np.allclose(adjust_pvalues(p, 'bonferroni'), np.minimum(p * m, 1))
    ref = generate('credit', n_rows=1_500, seed=11).frame
    cur = generate('credit', n_rows=1_500, seed=12, drift=Drift(('age',), 0.2)).frame
    res = DriftDetector().fit(ref, CREDIT).score(cur).columns
    assert np.allclose(res['p_adjusted'].to_numpy(), stats.false_discovery_control(res['p_value'].to_numpy()), rtol=1e-12)


def test_false_alarm_rate_under_no_drift_is_at_most_alpha():
    # One large credit sample, cut into disjoint random pairs of 2,000-row reference and current frames.
    reps, n = 200, 1_000
    pool = generate('credit', n_rows=reps * 2 * n, seed=21).frame.select(CREDIT)
    order = np.random.default_rng(0).permutation(pool.height)
    alarms_bh = alarms_bonf = 0
    for i in range(reps):
        ref = pool[order[2 * i * n:(2 * i + 1) * n]]
        cur = pool[order[(2 * i + 1) * n:(2 * i + 2) * n]]
        det = DriftDetector().fit(ref)
        res = det.score(cur)
        assert res.drift_detected == bool(res.columns['drift'].any())  # rule 'changed': any column changed
        alarms_bh += res.drift_detected
        alarms_bonf += DriftDetector(correction='bonferroni').fit(ref).score(cur).drift_detected
    print(f'family-wise false-alarm rate over {reps} repetitions: BH {alarms_bh / reps:.3f}, Bonferroni {alarms_bonf / reps:.3f}')
    assert alarms_bh <= _binomial_bound(reps) and alarms_bonf <= alarms_bh


@pytest.mark.parametrize('n_ref,n_cur', [(3_000, 1_000)])
def test_calibrated_effect_threshold_gives_the_stated_false_alarm_rate(n_ref, n_cur):
    # Effect sizes alone (no test): the (1 - alpha) quantile of `calibration_null` at the scored sizes (what
    # bars='reference' and profile drift hold effects to) is exceeded under no drift at most alpha of the time.
    from mlwork.drift.univariate import calibration_null
    reps = 200
    cols = ['income', 'age', 'n_open_accounts', 'region']
    pool = generate('credit', n_rows=reps * (n_ref + n_cur), seed=22).frame.select(cols)
    order = np.random.default_rng(1).permutation(pool.height)
    exceed = np.zeros(len(cols), int)
    for i in range(reps):
        at = i * (n_ref + n_cur)
        ref, cur = pool[order[at:at + n_ref]], pool[order[at + n_ref:at + n_ref + n_cur]]
        det = DriftDetector(seed=i).fit(ref)
        res = det.score(cur)
        for j, (c, e, m) in enumerate(res.columns.select('column', 'effect_value', 'n_current').iter_rows()):
            st = det.columns_[c]
            scale = st['std'] if st['kind'] == 'numeric' and st['std'] > 0 else 1.0
            null = calibration_null(st['atoms'], st['probs'], st['n'], m, scale=scale, reps=200, rng=np.random.default_rng([i, j]))
            exceed[j] += e > np.quantile(null, 0.95)
    rates = dict(zip(cols, exceed / reps))
    print(f'per-column calibrated false-alarm rates, {n_ref} vs {n_cur}, {reps} repetitions:', rates)
    assert (exceed <= _binomial_bound(reps, 0.05)).all(), rates
    assert exceed.sum() >= int(stats.binom.ppf(0.001, reps * len(cols), 0.05)), rates  # not vacuous: about alpha overall


@pytest.mark.parametrize('seed', [1, 2])
def test_injected_drift_is_flagged_and_nothing_else(seed):
    ref = generate('credit', n_rows=3_000, seed=100 + seed).frame
    cur = generate('credit', n_rows=3_000, seed=200 + seed,
                   drift=[Drift(('income',), 0.3), Drift(('region',), 0.2)]).frame
    res = DriftDetector().fit(ref, CREDIT).score(cur)
    assert sorted(res.drifted) == ['income', 'region']
    assert res.drift_detected and json.dumps(res.to_dict())


def test_benchmark_100k_finds_all_five_without_false_alarm():
    ref, cur, truth = drift_benchmark(100_000, seed=0)
    res = DriftDetector().fit(ref).score(cur)
    assert sorted(res.drifted) == sorted(truth)
    assert sorted(res.material) == sorted(truth) and res.alarm  # 0.2 sd and 10 % of rows: above the default bars
    # the undrifted columns' effects are far below the floor, the drifted ones well above
    eff = dict(zip(res.columns['column'], res.columns['effect_value']))
    assert max(v for k, v in eff.items() if k not in truth) < 0.03
    assert min(eff[k] for k in truth) > 0.09


def test_large_samples_need_an_effect_not_just_a_tiny_p_value():
    rng = np.random.default_rng(4)
    ref = pl.DataFrame({'x': rng.normal(size=200_000)})
    cur = pl.DataFrame({'x': rng.normal(0.03, 1, size=200_000)})  # real but immaterial shift
    auto = _row(DriftDetector().fit(ref).score(cur), 'x')
    # a real change is reported as changed (never "no drift"), and as not material under the 0.1 sd bar
    assert auto['p_adjusted'] < 1e-6 and auto['drift'] and not auto['material'] and auto['outcome'] == 'changed'
    assert auto['effect_low'] < auto['effect_value'] < auto['effect_high'] < auto['bar'] == 0.1
    assert 'not material' in auto['why'] and 'bar 0.1 (default)' in auto['why']
    assert _row(DriftDetector(bar_numeric=0.01).fit(ref).score(cur), 'x')['material']


def test_errors_and_contract():
    ref = pl.DataFrame({'x': [1.0, 2.0, 3.0, 4.0], 'g': ['a', 'b', 'a', 'b'], 't': pl.Series([1, 2, 3, 4]).cast(pl.Datetime)})
    with pytest.raises(NotFittedError, match='not fitted'):
        DriftDetector().score(ref)
    with pytest.raises(InvalidParameter, match=r"The 'alpha' parameter of DriftDetector must be a float in \(0, 1\). Got 0 instead."):
        DriftDetector(alpha=0).fit(ref)
    with pytest.raises(InvalidParameter, match="'alarm' parameter"):
        DriftDetector(alarm='magic').fit(ref)
    with pytest.raises(InvalidParameter, match="'n_calibration' parameter"):
        DriftDetector(n_calibration=3).fit(ref)
    with pytest.raises(DataError, match=r'column `t` must be numeric, boolean or categorical \(found Datetime'):
        DriftDetector().fit(ref, columns=['t'])
    det = DriftDetector(n_calibration=20).fit(ref)
    assert list(det.columns_) == ['x', 'g'] and det.bars_ == {'x': (0.1, 'default'), 'g': (0.05, 'default')}
    assert not det.score(ref).alarm
    with pytest.raises(InvalidParameter, match="'backend' parameter"):
        DriftDetector(backend='torch').fit(ref)
    with pytest.raises(DataError, match='column `x` must be numeric'):
        det.score(ref.with_columns(pl.col('x') > 2))
    as_text = _row(det.score(ref.with_columns(pl.col('x').cast(pl.String))), 'x')  # numbers that arrived as text (issue 12)
    assert as_text['kind'] == 'numeric' and 'numbers stored as text' in as_text['type_problem'] and not as_text['drift']
    res = det.score(pl.DataFrame({'x': [None, float('nan')], 'g': ['a', 'z']}, schema={'x': pl.Float64, 'g': pl.String}))
    x = _row(res, 'x')
    assert not x['drift'] and x['missing_current'] == 2 and 'not tested' in x['why']
    assert _row(res, 'g')['unseen'] == ['z']


def test_false_alarm_rate_on_acs_2015_split_at_random():
    # Real data without drift: ACS 2015 rows split at random into reference and current, 200 times.
    from mlwork.datasets import load_acs
    acs = load_acs(2015, labels=False)
    feats = [c for c in acs.columns if c not in ('id', 'year')]
    acs = acs.select(feats)
    reps, n = 200, 1_000
    alarms = 0
    for i in range(reps):
        idx = np.random.default_rng([5, i]).choice(acs.height, 2 * n, replace=False)
        res = DriftDetector().fit(acs[idx[:n]]).score(acs[idx[n:]])
        alarms += res.drift_detected
    print(f'ACS 2015 random halves: family-wise false-alarm rate {alarms / reps:.3f} over {reps} repetitions, {len(feats)} columns')
    assert alarms <= _binomial_bound(reps)


def test_kernels_on_the_strict_array_api_match_numpy():
    xps = pytest.importorskip('array_api_strict')
    rng = np.random.default_rng(8)
    ref = pl.DataFrame({'x': rng.normal(size=3_000), 'k': rng.poisson(3, 3_000), 'g': rng.choice(['a', 'b'], 3_000)})
    cur = pl.DataFrame({'x': rng.normal(0.1, 1, size=12_000), 'k': rng.poisson(3.2, 12_000), 'g': rng.choice(['a', 'b'], 12_000)})
    a = DriftDetector(backend=xps).fit(ref).score(cur).columns
    b = DriftDetector().fit(ref).score(cur).columns
    floats = [c for c, t in a.schema.items() if t == pl.Float64]
    assert a.drop(['why'] + floats).equals(b.drop(['why'] + floats))  # same decisions, rules, counts, methods
    for c in floats:  # the numpy path computes Wasserstein from quantile functions: equal up to summation order
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12, atol=1e-15)
    assert a['p_value'][0] == pytest.approx(stats.ks_2samp(ref['x'], cur['x']).pvalue, rel=1e-9)


def test_importing_drift_never_imports_cupy():
    import subprocess, sys
    code = ("import sys, polars as pl, mlwork.drift.univariate as d; "
            "det = d.DriftDetector(backend='auto').fit(pl.DataFrame({'x': [1.0, 2.0, 3.0]})); "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print(det.xp_.__name__)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import importlib.util
    if importlib.util.find_spec('cupy') is None:
        assert out.stdout.strip() == 'numpy'


def test_threads_do_not_change_results():
    ref, cur, _ = drift_benchmark(20_000, seed=4)
    one = DriftDetector(n_threads=1).fit(ref).score(cur).columns
    four = DriftDetector(n_threads=4).fit(ref).score(cur).columns
    assert one.equals(four)
