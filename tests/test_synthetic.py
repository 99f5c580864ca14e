"""The synthetic generators inject exactly what they document, checked against independent oracles.

Statistical checks use scipy. Every tolerance follows from the sample size and one error rate, ALPHA:
the chance that a correct generator fails a given check for some seed. Checks that must *not* flag
(undrifted features, the independence of `sex`) use ALPHA_QUIET with a Bonferroni split over the
features tested. The data is seeded, so the outcome of every test is fixed; the rates say how
unlucky a seed would have to be.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.core import InvalidParameter
from mlwork.synthetic import (GENERATORS, Drift, LabelShift, SyntheticData, generate, generate_credit, generate_demand,
                              generate_fraud)
from mlwork.synthetic_pii import PII_COLUMNS, generate_pii

ALPHA = 1e-6  # a check that must pass fails a correct generator with at most this chance
Z = stats.norm.isf(ALPHA / 2)  # two-sided normal quantile for ALPHA (about 4.9)
ALPHA_QUIET = 1e-3  # family-wise rate for "must not flag" checks (split over the features tested)


@functools.cache
def gen(name: str, n: int, seed: int, **kw) -> SyntheticData:
    "One generated dataset, cached across tests (keyword values must be hashable)."
    return GENERATORS[name](n, seed=seed, **kw)


def window(data: SyntheticData, start: str) -> np.ndarray:
    "Mask of the rows at or after `start`."
    return (data.frame['timestamp'] >= dt.datetime.fromisoformat(start)).to_numpy()


def two_proportion_se(p1: float, n1: int, p2: float, n2: int) -> float:
    return math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


def luhn_valid(number: str) -> bool:
    "Textbook Luhn check, one digit at a time (independent of the vectorised generator)."
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ---------------------------------------------------------------------------------------------- layout

@pytest.mark.parametrize('name', list(GENERATORS))
def test_layout_ids_and_timestamps(name):
    n = 5_001
    data = gen(name, n, 0)
    f = data.frame
    assert f['id'].to_list() == list(range(n))
    assert f['timestamp'].dtype == pl.Datetime('us')
    ts = f['timestamp'].to_numpy().astype('datetime64[us]').astype(np.int64)
    assert ts[0] == np.datetime64('2024-01-01T00:00:00', 'us').astype(np.int64)
    assert ts[-1] == np.datetime64('2024-12-31T23:59:59', 'us').astype(np.int64)
    gaps = np.diff(ts)
    assert gaps.min() >= 0 and gaps.max() - gaps.min() <= 1  # evenly spread, up to rounding to 1 µs
    assert data.truth['id'].equals(f['id'])
    assert data.truth.columns == ['id', 'drifted', 'label_changed', 'outlier', 'corrupt', 'missing']
    assert data.target in f.columns and data.task in ('binary', 'regression')
    assert set(data.features) < set(f.columns)
    assert data.features == data.spec['features']
    assert f.null_count().sum_horizontal().item() == 0  # no knob, no null
    json.dumps(data.to_dict())  # the spec is JSON-ready
    assert name in data._repr_html_()


def test_aware_datetimes_are_converted_to_utc():
    cet = dt.timezone(dt.timedelta(hours=1))
    data = generate_credit(10, start=dt.datetime(2024, 3, 1, 1, tzinfo=cet), end='2024-03-02')
    assert data.frame['timestamp'][0] == dt.datetime(2024, 3, 1)


# --------------------------------------------------------------------------------------- determinism

KNOBS = {'credit': dict(bias=0.1), 'fraud': dict(fraud_rate=0.01), 'demand': dict(promo_lift=0.5)}
GENERATORS_DRIFT = {'credit': 'income', 'fraud': 'amount', 'demand': 'price'}


@pytest.mark.parametrize('name', list(GENERATORS))
def test_same_seed_same_data_other_seed_other_data(name):
    kw = dict(KNOBS[name], drift=Drift(GENERATORS_DRIFT[name], 0.5, start='2024-06-01'),
              label_shift=LabelShift(0.05, start='2024-09-01'), missing=0.05, outliers=0.01, corrupt=0.01, pii=True)
    a, b, c = (GENERATORS[name](20_000, seed=s, **kw) for s in (4, 4, 5))
    assert a.frame.equals(b.frame) and a.truth.equals(b.truth) and a.spec == b.spec
    assert not a.frame.equals(c.frame)
    assert a.spec['params']['seed'] == 4 and a.spec['params']['missing'] == 0.05



def test_generate_by_name_matches_the_function():
    assert generate('demand', n_rows=300, seed=9).frame.equals(generate_demand(300, seed=9).frame)


# --------------------------------------------------------------------------------------------- drift

DRIFT_START = '2024-07-01'
CREDIT_DRIFTS = (Drift(('income', 'age'), 0.5, start=DRIFT_START), Drift('region', 0.2, start=DRIFT_START))


@pytest.fixture(scope='module')
def credit_drift():
    n = 400_000
    return gen('credit', n, 11, drift=CREDIT_DRIFTS), gen('credit', n, 11)


def test_drift_moves_the_mean_by_magnitude_times_reference_std(credit_drift):
    drifted, clean = credit_drift
    w = window(drifted, DRIFT_START)
    spec = drifted.spec['injected']['drift'][0]
    ref_std = float(np.std(clean.frame['income'].to_numpy()))  # our own reference std
    shift = 0.5 * ref_std
    assert spec['shift']['income'] == pytest.approx(shift, rel=1e-9)
    x, x0 = drifted.frame['income'].to_numpy(), clean.frame['income'].to_numpy()
    # the mechanism, row by row: nothing before start, + shift (rounded to cents) from start on
    assert np.array_equal(x[~w], x0[~w])
    assert np.abs(x[w] - x0[w] - shift).max() <= 0.005 + 1e-6
    # what a detector sees: the window's mean minus the reference's is the shift (Welch t-test)
    assert stats.ttest_ind(x[w] - shift, x[~w], equal_var=False).pvalue > ALPHA
    assert stats.ttest_ind(x[w], x[~w], equal_var=False).pvalue < ALPHA


def test_integer_drift_is_unbiased_with_stochastic_rounding(credit_drift):
    drifted, clean = credit_drift
    w = window(drifted, DRIFT_START)
    shift = 0.5 * float(np.std(clean.frame['age'].to_numpy()))
    moved = (drifted.frame['age'].to_numpy() - clean.frame['age'].to_numpy())[w]
    assert set(np.unique(moved)) <= {math.floor(shift), math.ceil(shift)}
    # each row adds floor(shift) + Bernoulli(frac(shift)): sd at most 1/2
    assert abs(moved.mean() - shift) < Z * 0.5 / math.sqrt(w.sum())


def test_ks_flags_the_drifted_features_and_only_them(credit_drift):
    drifted, _ = credit_drift
    w = window(drifted, DRIFT_START)
    f = drifted.frame
    numeric = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount']
    categorical = ['loan_purpose', 'employment', 'region']
    quiet = ALPHA_QUIET / len(numeric + categorical)
    for col in numeric:
        x = f[col].to_numpy()
        p = stats.ks_2samp(x[~w], x[w]).pvalue
        assert (p < ALPHA) if col in ('age', 'income') else (p > quiet), (col, p)
    for col in categorical:
        table = pl.DataFrame({'v': f[col].cast(pl.String), 'w': w}).group_by('v', 'w').len().pivot(
            'w', index='v', values='len').fill_null(0).drop('v').to_numpy()
        p = stats.chi2_contingency(table).pvalue
        assert (p < ALPHA) if col == 'region' else (p > quiet), (col, p)


def test_categorical_drift_replaces_with_the_documented_category(credit_drift):
    drifted, clean = credit_drift
    w = window(drifted, DRIFT_START)
    spec = drifted.spec['injected']['drift'][1]
    assert spec['to'] == {'region': 'central'}  # the rarest region (15 %)
    p0 = (clean.frame['region'] == 'central').mean()  # the reference share, measured
    k = int((drifted.frame['region'].filter(pl.Series(w)) == 'central').sum())
    expected = p0 + 0.2 * (1 - p0)
    assert stats.binomtest(k, int(w.sum()), expected).pvalue > ALPHA
    changed = (drifted.frame['region'] != clean.frame['region']).to_numpy()
    assert not changed[~w].any() and spec['replaced']['region'] >= changed.sum()
    # every row of the window was shifted (income, age), so all are marked; none before
    assert np.array_equal(drifted.truth['drifted'].to_numpy(), w)


def test_unseen_category_drift_extends_the_enum():
    data = generate_fraud(20_000, seed=2, drift=Drift('country', 0.3, category='XX'))
    assert data.frame['country'].dtype == pl.Enum([*data.spec['columns']['country']['categories']])
    share = (data.frame['country'] == 'XX').mean()
    assert abs(share - 0.3) < Z * math.sqrt(0.3 * 0.7 / 20_000)


def test_fraud_drift_keeps_the_labels():
    kw = dict(fraud_rate=0.01)
    drifted = gen('fraud', 100_000, 8, drift=Drift('distance_km', 1.0), **kw)
    clean = gen('fraud', 100_000, 8, **kw)
    assert drifted.frame['is_fraud'].equals(clean.frame['is_fraud'])
    assert drifted.frame.drop('distance_km').equals(clean.frame.drop('distance_km'))


# -------------------------------------------------------------------------------------- bias, labels

@pytest.mark.parametrize('group', ['F', 'M'])
def test_bias_lowers_the_groups_positive_rate_by_bias(group):
    bias, n = 0.1, 1_000_000
    data = gen('credit', n, 5, bias=bias, bias_group=group)
    f = data.frame
    other = 'M' if group == 'F' else 'F'
    g, o = f.filter(pl.col('sex') == group)['repaid'], f.filter(pl.col('sex') == other)['repaid']
    diff = o.mean() - g.mean()
    assert abs(diff - bias) < Z * two_proportion_se(g.mean(), len(g), o.mean(), len(o))
    inj = data.spec['injected']['bias']
    assert inj['flipped'] == round(bias * len(g))
    assert inj['positive_rate_before'][group] - inj['positive_rate_after'][group] == pytest.approx(inj['flipped'] / len(g))
    marked = f.filter(data.truth['label_changed'] == 'bias')
    assert marked.height == inj['flipped'] and (marked['sex'] == group).all() and (marked['repaid'] == 0).all()
    # before the bias both groups had the same rate: sex is independent of the features
    pb = inj['positive_rate_before']
    assert abs(pb['F'] - pb['M']) < Z * two_proportion_se(pb['F'], len(g), pb['M'], len(o))


def test_sex_is_independent_of_the_features():
    f = gen('credit', 1_000_000, 5, bias=0.1, bias_group='F').frame
    numeric = ['age', 'income', 'debt_ratio', 'loan_amount']
    for col in numeric:
        p = stats.ks_2samp(f.filter(pl.col('sex') == 'F')[col], f.filter(pl.col('sex') == 'M')[col]).pvalue
        assert p > ALPHA_QUIET / len(numeric), (col, p)


def test_bias_beyond_the_groups_rate_is_refused():
    with pytest.raises(InvalidParameter, match="The 'bias' parameter of generate_credit must be at most the repaid rate"):
        generate_credit(2_000, bias=0.95)


@pytest.mark.parametrize('name,magnitude', [('credit', 0.1), ('credit', -0.2), ('fraud', 0.01), ('fraud', -0.001)])
def test_binary_label_shift(name, magnitude):
    n, start = 400_000, '2024-10-01'
    shifted = gen(name, n, 6, label_shift=LabelShift(magnitude, start=start))
    clean = gen(name, n, 6)
    t = shifted.target
    # features untouched: P(x) is the same, only the labels change
    assert shifted.frame.drop(t).equals(clean.frame.drop(t))
    w = window(shifted, start)
    y, y0 = shifted.frame[t].to_numpy(), clean.frame[t].to_numpy()
    assert np.array_equal(y[~w], y0[~w])
    k = round(abs(magnitude) * w.sum())
    assert (y[w] != y0[w]).sum() == k == shifted.spec['injected']['label_shift']['flipped']
    assert (shifted.truth['label_changed'] == 'label_shift').sum() == k
    # what monitoring sees: the rate from start on minus the rate before is the magnitude
    p_before, p_after = y[~w].mean(), y[w].mean()
    se = two_proportion_se(p_before, int((~w).sum()), p_after, int(w.sum()))
    assert abs(p_after - p_before - magnitude) < Z * se


def test_fraud_rate_is_exact_and_uniform_in_time():
    n, rate = 1_000_000, 0.002
    f = gen('fraud', n, 3).frame
    y = f['is_fraud'].to_numpy()
    assert y.sum() == round(rate * n)
    for q in np.array_split(y, 4):  # positions are uniform: each quarter is a binomial sample
        assert stats.binomtest(int(q.sum()), len(q), rate).pvalue > ALPHA


def test_fraud_features_depend_on_the_label():
    f = gen('fraud', 1_000_000, 3).frame
    fraud, legit = f.filter(pl.col('is_fraud') == 1), f.filter(pl.col('is_fraud') == 0)
    for col in ('amount', 'distance_km', 'n_tx_24h'):
        assert stats.mannwhitneyu(fraud[col], legit[col], alternative='greater').pvalue < ALPHA, col
    night = lambda d: d['hour'].is_between(0, 5).sum()
    table = [[night(fraud), fraud.height - night(fraud)], [night(legit), legit.height - night(legit)]]
    assert stats.chi2_contingency(table).pvalue < ALPHA and night(fraud) / fraud.height > night(legit) / legit.height
    assert f.filter(pl.col('card_present'))['channel'].cast(pl.String).is_in(['pos', 'atm']).all()


def test_regression_label_shift_multiplies_the_expected_target():
    n, start, m = 300_000, '2024-10-01', 0.5
    shifted = gen('demand', n, 7, label_shift=LabelShift(m, start=start))
    clean = gen('demand', n, 7)
    assert shifted.frame.drop('units_sold').equals(clean.frame.drop('units_sold'))
    w = window(shifted, start)
    y, y0 = shifted.frame['units_sold'].to_numpy(), clean.frame['units_sold'].to_numpy()
    assert np.array_equal(y[~w], y0[~w])
    # sums of Poisson counts: S ~ Poisson(1.5 L), S0 ~ Poisson(L); the draws share a stream, so bound
    # the sd of S - 1.5 S0 by sd(S) + 1.5 sd(S0) (Cauchy-Schwarz), with L estimated by S0
    s, s0 = y[w].sum(), y0[w].sum()
    assert abs(s - (1 + m) * s0) < Z * (math.sqrt((1 + m) * s0) + (1 + m) * math.sqrt(s0))
    assert (shifted.truth['label_changed'] == 'label_shift').sum() == w.sum()


def test_demand_responds_to_price_promo_and_weekday():
    f = gen('demand', 300_000, 7).frame
    rel = f.join(f.group_by('product_id').agg(pl.col('price').filter(~pl.col('promo')).median().alias('base')), on='product_id')
    rel = rel.filter(~pl.col('promo')).with_columns((pl.col('price') / pl.col('base')).log().alias('lp'))
    # within products and without promotions, a higher relative price sells less
    assert stats.spearmanr(rel['lp'], rel['units_sold']).statistic < 0
    by_day = f.group_by('day_of_week').agg(pl.col('units_sold').mean()).sort('day_of_week')['units_sold']
    assert by_day[5] > by_day[0]  # Saturday above Monday (1.35 vs 0.85)
    promo = f.group_by('promo').agg(pl.col('units_sold').mean()).sort('promo')['units_sold']
    assert promo[1] > promo[0]


# ----------------------------------------------------------------------------------- missing values

def test_missing_rate_per_column():
    n, rates = 200_000, {'amount': 0.1, 'country': 0.3, 'hour': 0.01}
    data = generate_fraud(n, seed=12, missing=rates)
    f = data.frame
    for col in f.columns:
        k = f[col].null_count()
        if col in rates:
            assert stats.binomtest(k, n, rates[col]).pvalue > ALPHA, (col, k)
        else:
            assert k == 0, col
    assert data.spec['injected']['missing'] == {c: f[c].null_count() for c in rates}
    assert data.truth['missing'].cast(pl.Int64).sum() == sum(f.null_count().row(0))
    # only nulls were added
    clean = generate_fraud(n, seed=12)
    for col in rates:
        kept = f[col].is_not_null()
        assert f[col].filter(kept).equals(clean.frame[col].filter(kept))


def test_missing_float_applies_to_every_feature_not_sex():
    n, rate = 100_000, 0.05
    f = generate_credit(n, seed=1, missing=rate).frame
    features = GENERATORS['credit'](10).features
    quiet = ALPHA / len(features)
    for col in features:
        assert stats.binomtest(f[col].null_count(), n, rate).pvalue > quiet, col
    for col in ('id', 'timestamp', 'sex', 'repaid'):
        assert f[col].null_count() == 0


# ------------------------------------------------------------------------------ outliers and corrupt

@pytest.mark.parametrize('name', list(GENERATORS))
def test_outliers_exact_count_extreme_and_type_valid(name):
    n, frac = 200_000, 0.01
    data, clean = gen(name, n, 13, outliers=frac), gen(name, n, 13)
    f, f0, truth = data.frame, clean.frame, data.truth
    assert truth['outlier'].is_not_null().sum() == round(frac * n)
    assert f.schema == f0.schema
    per_column = data.spec['injected']['outliers']['columns']
    changed_rows = set()
    for col, info in per_column.items():
        rows = (truth['outlier'] == col).fill_null(False)
        assert rows.sum() == info['rows']
        x = f[col].filter(~truth['outlier'].is_not_null()).to_numpy()
        fence = np.percentile(x, 75) + 3 * stats.iqr(x)  # Tukey's far-out fence, from the untouched rows
        assert (f[col].filter(rows) > fence).all(), col
        low, high = data.spec['columns'][col]['domain']
        assert (f[col].filter(rows) >= low).all() and (high is None or (f[col].filter(rows) <= high).all())
        changed_rows |= set(np.flatnonzero((f[col] != f0[col]).to_numpy()))
    # nothing else changed: the rows that differ from the clean frame are the outlier rows
    assert changed_rows <= set(np.flatnonzero(truth['outlier'].is_not_null().to_numpy()))
    others = [c for c in f.columns if c not in per_column]
    assert f.select(others).equals(f0.select(others))


@pytest.mark.parametrize('name', list(GENERATORS))
def test_corrupt_rows_are_impossible_or_wrongly_typed(name):
    n, frac = 200_000, 0.01
    data, clean = gen(name, n, 14, corrupt=frac), gen(name, n, 14)
    f, truth, spec = data.frame, data.truth, data.spec
    reason = truth['corrupt'].cast(pl.String)
    assert reason.is_not_null().sum() == round(frac * n)
    assert spec['injected']['corrupt']['counts'] == {r: c for r, c in reason.value_counts().drop_nulls().rows()}
    wrong_col = spec['injected']['corrupt']['wrong_type_column']
    assert f[wrong_col].dtype == pl.String and clean.frame[wrong_col].dtype != pl.String
    parsed = f[wrong_col].cast(pl.Float64, strict=False)
    wrong = reason == f'wrong_type:{wrong_col}'
    assert wrong.sum() > 0 and parsed.filter(wrong).null_count() == wrong.sum()
    assert f[wrong_col].filter(wrong).str.contains(r'^(n/a|unknown|#VALUE!|[\d,]+\$)$').all()
    assert parsed.filter(~wrong).null_count() == 0  # every other value parses as a number
    numeric = f.with_columns(parsed.alias(wrong_col))
    for col, meta in spec['columns'].items():
        if 'domain' not in meta:
            continue
        low = -math.inf if meta['domain'][0] is None else meta['domain'][0]
        high = math.inf if meta['domain'][1] is None else meta['domain'][1]
        inside = numeric[col].is_between(low, high)
        bad = reason == f'impossible:{col}'
        assert not inside.filter(bad).any(), col  # every impossible value is outside the domain
        assert inside.filter(~bad & ~wrong).all(), col  # and every other value inside it
    # rows that are not corrupt equal the clean frame (values of the text column parse back exactly)
    ok = reason.is_null()
    assert numeric.filter(ok).equals(clean.frame.filter(ok))


def test_corrupt_kinds_choose_the_corruption():
    only_impossible = generate_credit(10_000, seed=1, corrupt=0.05, corrupt_kinds=('impossible',))
    assert only_impossible.frame['income'].dtype == pl.Float64
    assert only_impossible.truth['corrupt'].cast(pl.String).str.starts_with('impossible:').sum() == 500
    only_wrong = generate_credit(10_000, seed=1, corrupt=0.05, corrupt_kinds=('wrong_type',))
    assert (only_wrong.truth['corrupt'] == 'wrong_type:income').sum() == 500


def test_injections_combine_without_overlap():
    data = generate_credit(50_000, seed=3, missing=0.2, outliers=0.05, corrupt=0.05)
    t = data.truth
    assert not (t['outlier'].is_not_null() & t['corrupt'].is_not_null()).any()
    c = data.spec['counts']
    assert (c['outlier_rows'], c['corrupt_rows']) == (2_500, 2_500)
    # a null never hides an injected value
    for col in data.spec['injected']['outliers']['columns']:
        assert data.frame[col].filter(t['outlier'] == col).null_count() == 0


# ---------------------------------------------------------------------------------------------- PII

def test_pii_columns():
    n = 100_000
    data, clean = gen('credit', n, 21, pii=True), gen('credit', n, 21)
    f = data.frame
    assert f.columns[-4:] == list(PII_COLUMNS) and f.drop(PII_COLUMNS).equals(clean.frame)
    cards = f['card_number']
    assert cards.str.contains(r'^(4\d{15}|5[1-5]\d{14})$').all()
    assert all(luhn_valid(c) for c in cards)
    assert not luhn_valid(str(int(cards[0]) + 1))  # the oracle can say no
    assert f['email'].str.contains(r'^[a-z]+\.[a-z]+\d*@(mail\.)?example\.(com|org|net)$').all()
    assert f['phone'].str.contains(r'^\+1 [2-9]\d{2}-555-01\d{2}$').all()
    assert f['name'].str.contains(r'^[A-Z][a-z]+ [A-Z][a-z]+$').all()
    first = f.select(pl.col('name').str.split(' ').list.first(), 'sex')
    by_sex = {s: set(first.filter(pl.col('sex') == s)['name']) for s in ('F', 'M')}
    assert not by_sex['F'] & by_sex['M']  # the first name follows sex: a proxy, as in real data


@pytest.mark.parametrize('name', ['fraud', 'demand'])
def test_pii_on_other_generators(name):
    f = generate(name, n_rows=2_000, seed=1, pii=True).frame
    assert all(luhn_valid(c) for c in f['card_number']) and f['name'].n_unique() > 100


# -------------------------------------------------------------------------------------- bad parameters

BAD = [
    ('credit', {'n_rows': -1}, 'n_rows'), ('credit', {'n_rows': 0}, 'n_rows'), ('credit', {'n_rows': 2.5}, 'n_rows'),
    ('credit', {'seed': -3}, 'seed'), ('credit', {'missing': 1.2}, 'missing'),
    ('credit', {'missing': {'salary': 0.1}}, 'missing'), ('credit', {'outliers': -0.1}, 'outliers'),
    ('credit', {'corrupt': 2}, 'corrupt'), ('credit', {'outliers': 0.6, 'corrupt': 0.6}, 'corrupt'),
    ('credit', {'corrupt_kinds': ('bogus',)}, 'corrupt_kinds'), ('credit', {'corrupt_kinds': ()}, 'corrupt_kinds'),
    ('credit', {'start': '2025-01-01', 'end': '2024-01-01'}, 'end'), ('credit', {'start': 'yesterday'}, 'start'),
    ('credit', {'drift': Drift('salary', 1.0)}, 'drift'), ('credit', {'drift': Drift('region', 1.5)}, 'drift'),
    ('credit', {'drift': 'income'}, 'drift'), ('credit', {'drift': Drift('income', 1.0, start='2030-01-01')}, 'drift'),
    ('credit', {'label_shift': LabelShift(2.0)}, 'label_shift'), ('credit', {'label_shift': 0.1}, 'label_shift'),
    ('credit', {'bias': 1.0}, 'bias'), ('credit', {'bias': -0.1}, 'bias'), ('credit', {'bias_group': 'X'}, 'bias_group'),
    ('credit', {'pii': 'yes'}, 'pii'),
    ('fraud', {'fraud_rate': 1.5}, 'fraud_rate'), ('fraud', {'drift': Drift('card_present', 0.1)}, 'drift'),
    ('fraud', {'label_shift': LabelShift(-0.01)}, 'label_shift'),
    ('demand', {'elasticity': -1}, 'elasticity'), ('demand', {'promo_lift': float('inf')}, 'promo_lift'),
    ('demand', {'label_shift': LabelShift(-1.5)}, 'label_shift'), ('demand', {'drift': Drift('day_of_week', 1.0)}, 'drift'),
]


@pytest.mark.parametrize('name,kw,param', BAD, ids=[f'{n}-{p}-{i}' for i, (n, _, p) in enumerate(BAD)])
def test_bad_parameters_name_the_parameter(name, kw, param):
    kw = {'n_rows': 1_000, **kw}
    with pytest.raises(InvalidParameter, match=rf"The '{param}' parameter of generate_{name} must be") as e:
        generate(name, **kw)
    assert isinstance(e.value, ValueError)


def test_unknown_feature_error_lists_the_valid_names():
    with pytest.raises(InvalidParameter) as e:
        generate_credit(100, drift=Drift('salary', 1.0))
    msg = str(e.value)
    assert "Got 'salary' instead" in msg
    assert all(name in msg for name in ('age', 'income', 'debt_ratio', 'loan_purpose', 'region'))


def test_unknown_generator_name():
    with pytest.raises(InvalidParameter, match="The 'name' parameter of generate must be one of 'credit', 'fraud', 'demand'"):
        generate('churn')


def test_bad_knob_objects():
    with pytest.raises(InvalidParameter, match="The 'magnitude' parameter of Drift"):
        Drift('income', math.inf)
    with pytest.raises(InvalidParameter, match="The 'start' parameter of LabelShift"):
        LabelShift(0.1, start='someday')


def test_generate_pii_gives_the_columns_pii_true_adds():
    alone = generate_pii(3_000, seed=4)
    assert alone.columns == list(PII_COLUMNS)
    assert alone.equals(generate_fraud(3_000, seed=4, pii=True).frame.select(PII_COLUMNS))
    with pytest.raises(InvalidParameter, match="The 'n_rows' parameter of generate_pii"):
        generate_pii(0)
