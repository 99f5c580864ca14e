"""Drift decisions (issue 12): detection kept apart from materiality and the dataset alarm, checked against scipy.

- the five mild drifts at 100 k rows (1 M: slow): all changed, nothing else changed, none material, alarm raised;
- detection probability does not fall with n at sizes straddling every size constant of the code;
- the effect intervals' lower ends, the bars and their sources, the method label, text columns within bounded memory.
"""
import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.drift.kernels import KS_INDEX_EDGES, KS_MAX_EXACT_N
from mlwork.drift.power import drift_benchmark
from mlwork.drift.univariate import (CALIBRATION_MAX_UNIQUE, ID_MIN_DISTINCT, MAX_CATEGORIES, DriftDetector,
                                     dataset_decision, tv_interval, wasserstein_interval)


def _oracle_changed(ref: pl.DataFrame, cur: pl.DataFrame, alpha: float = 0.05) -> list[str]:
    "Columns whose scipy test (ks_2samp, chi2_contingency) rejects after scipy's BH correction."
    names, pv = [], []
    for c in ref.columns:
        if ref[c].dtype == pl.String:
            cats = sorted(set(ref[c].unique()) | set(cur[c].unique()))
            r, k = ref[c].value_counts(), cur[c].value_counts()
            table = np.array([[dict(zip(t[c], t['count'])).get(x, 0) for x in cats] for t in (r, k)])
            pv.append(stats.chi2_contingency(table, correction=False).pvalue)
        else:
            pv.append(stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue)
        names.append(c)
    adj = stats.false_discovery_control(np.array(pv))
    return sorted(n for n, p in zip(names, adj) if p < alpha)


def _mild_case(n: int, scipy_oracle: bool = True) -> None:
    ref, cur, truth = drift_benchmark(n, mild=True, seed=0)
    res = DriftDetector().fit(ref).score(cur)
    print(res.columns.filter(pl.col('drift')).select('column', 'p_adjusted', 'effect_value', 'effect_low', 'effect_high', 'bar', 'outcome'))
    assert sorted(res.drifted) == sorted(truth)  # all five changed, nothing else (the generator's truth)
    if scipy_oracle:
        assert sorted(res.drifted) == _oracle_changed(ref, cur)  # scipy's tests, corrected, agree
    assert res.material == []  # effects 0.03-0.07: under the default bars 0.1 sd and 0.05 TV, by their intervals
    assert set(res.columns.filter(pl.col('drift'))['outcome']) == {'changed'}
    assert (res.columns.filter(pl.col('drift'))['effect_high'] < res.columns.filter(pl.col('drift'))['bar']).all()
    assert res.alarm and res.decision['rule'] == 'changed' and res.decision['false_alarm_rate'] == 0.05
    assert json.loads(json.dumps(res.to_dict()))['decision']['inputs']['changed'] == res.drifted


def test_five_mild_drifts_at_100k_are_changed_not_material_and_alarm():
    _mild_case(100_000)


@pytest.mark.slow
def test_five_mild_drifts_at_1m_are_changed_not_material_and_alarm():
    _mild_case(1_000_000)


@pytest.mark.slow
def test_five_mild_drifts_at_10m_are_changed_not_material_and_alarm():
    # about a minute and 7.5 GB on 2 cores; checked against the generator's truth only: scipy's tests on 25 columns
    # cost three times the detector (at 1 M: 7.2 s against 2.4, of the test's 12.3 s), and they are the oracle at 100 k
    # and 1 M above
    _mild_case(10_000_000, scipy_oracle=False)


SIZES = sorted({5_000, 9_000, KS_INDEX_EDGES, KS_MAX_EXACT_N, KS_MAX_EXACT_N + 1, 12_000, 50_000})  # straddle the constants


def test_detection_never_falls_with_n_four_point_rise_in_a_group_share():
    "The issue's case: one group's share +4 points; 20/20 where chi-squared finds it 20/20 (0/20 at 12,000 before)."
    p = np.array([0.4, 0.3, 0.2, 0.1])
    q = p + np.array([-0.04, 0.0, 0.04, 0.0])
    hits = {}
    for n in SIZES:
        hits[n] = 0
        for seed in range(20):
            rng = np.random.default_rng([seed, n])
            cats = np.array(['a', 'b', 'c', 'd'])
            ref = pl.DataFrame({'g': cats[rng.choice(4, n, p=p)], 'x': rng.normal(size=n)})
            cur = pl.DataFrame({'g': cats[rng.choice(4, n, p=q)], 'x': rng.normal(size=n)})
            res = DriftDetector().fit(ref).score(cur)
            assert res.drifted == _oracle_changed(ref, cur)  # the decision is scipy's test, corrected, at every n
            hits[n] += 'g' in res.drifted
    print('changed out of 20 per size:', hits)
    assert all(h == 20 for h in hits.values()), hits


def test_detection_never_falls_with_n_numeric_mean_shift():
    "A 0.06 sd shift as one of 25 columns: the share detected is non-decreasing over sizes straddling the constants."
    rates = {}
    for n in SIZES:
        rates[n] = 0
        for seed in range(20):
            rng = np.random.default_rng([seed, n, 1])
            ref, cur = pl.DataFrame({'x': rng.normal(size=n)}), pl.DataFrame({'x': rng.normal(0.06, 1, size=n)})
            p = DriftDetector().fit(ref).score(cur).columns['p_value'][0]
            assert p == pytest.approx(stats.ks_2samp(ref['x'], cur['x']).pvalue, rel=1e-9, abs=1e-300)
            p_adj = stats.false_discovery_control(np.append(p, rng.random(24)))[0]
            rates[n] += p_adj < 0.05
    print('changed out of 20 per size:', rates)
    counts = [rates[n] for n in SIZES]
    assert counts[-1] == 20 and all(b >= a - 2 for a, b in zip(counts, counts[1:])), rates  # binomial noise only
    assert counts[SIZES.index(12_000)] >= counts[SIZES.index(5_000)]


def test_interval_lower_ends_rarely_exceed_the_truth():
    "'material' rests on the lower end: it lies above the true effect rarely (nominal 2.5 %; measured 2-4 % Wasserstein, under 1 % TV)."
    rng = np.random.default_rng(11)
    above_w = above_tv = 0
    p0 = np.array([0.4, 0.3, 0.2, 0.1])
    for _ in range(300):
        a, b = np.sort(rng.normal(size=3_000)), np.sort(rng.normal(0.08, 1, size=2_000))
        lo, hi = wasserstein_interval(a, b, stats.wasserstein_distance(a, b), rng=rng)
        above_w += lo > 0.08
        lo, hi = tv_interval(rng.multinomial(3_000, p0), rng.multinomial(2_000, p0 + [-0.04, 0, 0.04, 0]), rng=rng)
        above_tv += lo > 0.04
    print(f'lower end above the truth: Wasserstein {above_w}/300, TV {above_tv}/300')
    assert above_w <= stats.binom.ppf(0.999, 300, 0.05) and above_tv <= stats.binom.ppf(0.999, 300, 0.025)


def test_bars_sources_and_material_on_the_interval():
    rng = np.random.default_rng(2)
    ref = pl.DataFrame({'x': rng.normal(size=20_000), 'y': rng.normal(size=20_000), 'g': rng.choice(['a', 'b'], 20_000)})
    cur = pl.DataFrame({'x': rng.normal(0.3, 1, 20_000), 'y': rng.normal(0.1, 1, 20_000), 'g': rng.choice(['a', 'b'], 20_000, p=[0.4, 0.6])})
    res = DriftDetector(bars={'x': 0.5}, bars_source='contract').fit(ref).score(cur).columns
    row = {r['column']: r for r in res.iter_rows(named=True)}
    assert (row['x']['bar'], row['x']['bar_source'], row['x']['outcome']) == (0.5, 'contract', 'changed')  # 0.3 < 0.5
    # y moved by 0.1 sd, exactly the default bar: the interval contains it, so not material
    assert row['y']['bar_source'] == 'default' and row['y']['drift'] and not row['y']['material']
    assert row['y']['effect_low'] < 0.1 < row['y']['effect_high'] and 'reaches the bar' in row['y']['why']
    assert (row['g']['bar'], row['g']['outcome']) == (0.05, 'material')  # TV 0.1 > 0.05
    learned = DriftDetector(bars='reference').fit(ref).score(cur).columns
    assert set(learned['bar_source']) == {'reference'} and (learned['bar'] < 0.05).all() and learned['material'].all()


def test_alarm_rules_and_their_false_alarm_rate_under_no_change():
    reps, alarms = 60, {r: 0 for r in ('changed', 'material', 'share', 'severity')}
    for i in range(reps):
        ref, cur, _ = drift_benchmark(2_000, shift=0.0, moved=0.0, seed=100 + i)
        columns = DriftDetector().fit(ref).score(cur).columns   # the per-column outcomes do not depend on the rule
        for rule in alarms:
            alarm = dataset_decision(columns, rule=rule)['alarm']
            if i < 5:   # the detector made with the rule decides the same
                assert DriftDetector(alarm=rule).fit(ref).score(cur).alarm == alarm
            alarms[rule] += alarm
    print('alarms under no change:', alarms)
    assert alarms['changed'] <= stats.binom.ppf(0.999, reps, 0.05)
    assert alarms['material'] <= alarms['changed'] and alarms['share'] <= alarms['changed']
    ref, cur, truth = drift_benchmark(5_000, seed=1)
    res = DriftDetector(alarm='severity', importance={'num_00': 10.0}).fit(ref).score(cur)
    assert res.alarm and res.decision['inputs']['severity'] > 0.4 and res.decision['rule'] == 'severity'


def test_method_label_is_the_method_scipy_used():
    rng = np.random.default_rng(0)
    ref, cur = pl.DataFrame({'x': rng.normal(size=50_000)}), pl.DataFrame({'x': rng.normal(size=49_999)})
    row = DriftDetector(ks_method='exact').fit(ref).score(cur).columns.row(0, named=True)
    with pytest.warns(RuntimeWarning, match='Switching to'):
        want = stats.ks_2samp(ref['x'], cur['x'], method='exact')
    assert row['method'] == 'asymp' and row['p_value'] == pytest.approx(want.pvalue, rel=1e-9)


def test_text_columns_numbers_identifiers_and_the_hashed_sketch():
    rng = np.random.default_rng(5)
    n = 60_000
    weights = 1.0 / np.arange(1, 20_001)
    weights /= weights.sum()  # 20,000 Zipf categories: many, but not near-unique
    ref = pl.DataFrame({'income': [f'{v:.2f}' for v in rng.normal(50, 10, n)], 'card': [str(v) for v in rng.integers(10**15, 10**16, n)],
                        'city': pl.Series(rng.choice(20_000, n, p=weights)).cast(pl.String).str.replace('^', 'c')})
    cur = pl.DataFrame({'income': [f'{v:.2f}' for v in rng.normal(50.5, 10, n - 100)] + ['n/a'] * 100,
                        'card': [str(v) for v in rng.integers(10**15, 10**16, n)],
                        'city': pl.Series(rng.choice(20_000, n, p=weights)).cast(pl.String).str.replace('^', 'c')})
    det = DriftDetector().fit(ref)
    assert det.columns_['city']['hashes'] is not None and len(det.columns_['city']['counts']) <= 1_000
    assert len(set(ref['city'])) > MAX_CATEGORIES and ref['card'].n_unique() > ID_MIN_DISTINCT
    rows = {r['column']: r for r in det.score(cur).columns.iter_rows(named=True)}
    inc = rows['income']
    assert inc['kind'] == 'numeric' and inc['drift'] and '99.83% of current values parse' in inc['type_problem']
    parsed = cur['income'].cast(pl.Float64, strict=False).drop_nulls().to_numpy()
    assert inc['p_value'] == pytest.approx(stats.ks_2samp(ref['income'].cast(pl.Float64).to_numpy(), parsed).pvalue, rel=1e-9)
    assert rows['card']['kind'] == 'identifier' and rows['card']['why'].startswith('left out: identifier')
    city = rows['city']  # same distribution: the hashed histogram must not see a change (a top-k sketch would)
    assert not city['drift'] and 'hashed histogram' in city['method'] and city['unseen_count'] >= 0
    assert len(city['unseen']) <= 20


def test_peak_memory_on_a_million_rows_with_pii_columns(tmp_path):
    "The issue's credit case (names, emails, phones, card numbers; income as text in the batch): bounded memory."
    code = r'''
import resource, sys
import polars as pl
from mlwork.synthetic import generate
ref = generate('credit', n_rows=N, seed=0, pii=True).frame
cur = generate('credit', n_rows=N, seed=1, pii=True, corrupt=0.01, corrupt_kinds=('wrong_type',)).frame
ref.write_parquet(sys.argv[1] + '/r.parquet'); cur.write_parquet(sys.argv[1] + '/c.parquet')
'''
    n = 200_000
    subprocess.run([sys.executable, '-c', code.replace('N', str(n)), str(tmp_path)], check=True, timeout=600)
    measure = r'''
import json, resource, sys
import polars as pl
from mlwork.drift.univariate import DriftDetector
ref, cur = pl.read_parquet(sys.argv[1] + '/r.parquet'), pl.read_parquet(sys.argv[1] + '/c.parquet')
cols = [c for c in ref.columns if c not in ('id', 'timestamp', 'repaid')]
pii = ['name', 'email', 'phone', 'card_number']  # named as drift columns, so opted in
DriftDetector().fit(ref.head(1000), cols, allow_pii=pii).score(cur.head(1000))  # warm-up: code and regex engines, not data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
res = DriftDetector().fit(ref, cols, allow_pii=pii).score(cur)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({'arrow': ref.estimated_size() + cur.estimated_size(), 'before': before, 'peak': peak,
                  'kinds': dict(zip(res.columns['column'], res.columns['kind']))}))
'''
    out = subprocess.run([sys.executable, '-c', measure, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    print(m)
    assert m['kinds']['email'] == m['kinds']['card_number'] == 'identifier' and m['kinds']['income'] == 'numeric'
    assert m['peak'] - m['before'] < 2 * m['arrow']  # the drift step itself, on top of the frames already read
