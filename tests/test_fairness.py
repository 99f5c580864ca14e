"""mlwork.fairness.metrics against fairlearn 0.15 (the oracle), a slow row-resampling bootstrap, and a
coverage simulation from a population with known rates."""
from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError, InvalidParameter
from mlwork.fairness.metrics import COUNT_METRICS, fairness_audit, group_counts, metrics_from_counts

fairlearn = pytest.importorskip('fairlearn')
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, demographic_parity_ratio,  # noqa: E402
                               equalized_odds_difference, false_negative_rate, false_positive_rate, selection_rate,
                               true_positive_rate)
from sklearn.metrics import accuracy_score, precision_score  # noqa: E402

FL_METRICS = {'selection_rate': selection_rate, 'tpr': true_positive_rate, 'fpr': false_positive_rate,
              'fnr': false_negative_rate, 'precision': lambda y, p, **kw: precision_score(y, p, zero_division=0, **kw),
              'accuracy': accuracy_score}


@pytest.fixture(scope='module')
def acs() -> pl.DataFrame:
    from mlwork.datasets import load_acs
    d = load_acs([2015])
    schl = pl.col('SCHL').cast(pl.String).cast(pl.Int64)
    score = 1 / (1 + (-(schl - 16) / 3 + ((pl.col('AGEP') - 42) / 14) ** 2 - 0.5).exp())
    return d.with_columns(score=score, yhat=(score >= 0.5).cast(pl.Int64),
                          w=(pl.col('AGEP') % 7 + 1).cast(pl.Float64))


def _mf(frame: pl.DataFrame, sensitive: list[str], **kw) -> MetricFrame:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MetricFrame(metrics=FL_METRICS, y_true=frame['employed'].to_numpy(), y_pred=frame['yhat'].to_numpy(),
                           sensitive_features={c: frame[c].cast(pl.String).to_numpy() for c in sensitive}, **kw)


def _key(row: dict, sensitive: list[str]):
    return row[sensitive[0]] if len(sensitive) == 1 else tuple(row[c] for c in sensitive)


@pytest.mark.parametrize('sensitive', [['SEX'], ['RAC1P'], ['SEX', 'RAC1P']])
def test_group_metrics_equal_fairlearn(acs, sensitive):
    ours = metrics_from_counts(group_counts(acs, y_true='employed', y_pred='yhat', sensitive=sensitive))
    fl = _mf(acs, sensitive).by_group.dropna(how='all')  # fairlearn lists unobserved combinations as NaN rows
    assert ours.height == len(fl)
    checked = 0
    for row in ours.iter_rows(named=True):
        ref = fl.loc[_key(row, sensitive)]
        for m in COUNT_METRICS:
            if row[m] is None:  # undefined (zero denominator): fairlearn/sklearn return 0 with a warning
                assert ref[m] == 0
                continue
            assert abs(row[m] - ref[m]) <= 1e-12, (row['group'], m, row[m], ref[m])
            checked += 1
    assert checked >= 6 * ours.height - 6


def test_weighted_counts_equal_fairlearn(acs):
    ours = metrics_from_counts(group_counts(acs, y_true='employed', y_pred='yhat', sensitive=['RAC1P'], weight='w'))
    w = acs['w'].to_numpy()
    fl = _mf(acs, ['RAC1P'], sample_params={m: {'sample_weight': w} for m in FL_METRICS}).by_group
    for row in ours.iter_rows(named=True):
        for m in COUNT_METRICS:
            if row[m] is not None:
                assert abs(row[m] - fl.loc[row['RAC1P'], m]) <= 1e-12


def test_audit_matches_fairlearn_disparities(acs):
    a = fairness_audit(acs, y_true='employed', y_pred='yhat', sensitive=['SEX', 'RAC1P'], n_boot=0)
    # per-group values in the audit = fairlearn's, intersection included
    fl = _mf(acs, ['SEX', 'RAC1P']).by_group
    inter = a.by_group.filter(attribute='SEX × RAC1P', metric='tpr', too_small=False)
    for row in inter.iter_rows(named=True):
        assert abs(row['value'] - fl.loc[(row['SEX'], row['RAC1P']), 'tpr']) <= 1e-12
    # disparities over the groups large enough to judge = MetricFrame.difference()/ratio() on those groups
    for attrs in (['RAC1P'], ['SEX', 'RAC1P']):
        label = ' × '.join(attrs)
        ok = a.by_group.filter(attribute=label, metric='selection_rate', too_small=False)
        key = pl.concat_str([pl.col(c).cast(pl.String) for c in attrs], separator='|')
        keep = acs.filter(key.is_in(ok.select(pl.concat_str(attrs, separator='|')).to_series().implode()))
        mf = _mf(keep, attrs)
        d = a.disparities.filter(attribute=label)
        get = lambda name, kind: d.filter(name=name, kind=kind)['value'].item()  # noqa: E731
        assert abs(get('demographic_parity', 'difference') - mf.difference()['selection_rate']) <= 1e-12
        assert abs(get('demographic_parity', 'ratio') - mf.ratio()['selection_rate']) <= 1e-12
        assert abs(get('disparate_impact', 'ratio') - mf.ratio()['selection_rate']) <= 1e-12
        assert abs(get('equal_opportunity', 'difference') - mf.difference()['tpr']) <= 1e-12
        ok_prec = a.by_group.filter(attribute=label, metric='precision', too_small=False)
        if ok_prec.height == ok.height:
            assert abs(get('predictive_parity', 'difference') - mf.difference()['precision']) <= 1e-12
        assert abs(get('equalized_odds', 'difference') - max(mf.difference()['tpr'], mf.difference()['fpr'])) <= 1e-12
    # fairlearn's one-number functions, on an attribute whose groups are all large
    y, p, s = acs['employed'].to_numpy(), acs['yhat'].to_numpy(), acs['SEX'].cast(pl.String).to_numpy()
    d = a.disparities.filter(attribute='SEX')
    assert abs(d.filter(name='demographic_parity', kind='difference')['value'].item()
               - demographic_parity_difference(y, p, sensitive_features=s)) <= 1e-12
    assert abs(d.filter(name='demographic_parity', kind='ratio')['value'].item()
               - demographic_parity_ratio(y, p, sensitive_features=s)) <= 1e-12
    assert abs(d.filter(name='equalized_odds', kind='difference')['value'].item()
               - equalized_odds_difference(y, p, sensitive_features=s)) <= 1e-12


def _slow_bootstrap(frame: pl.DataFrame, n_boot: int, seed: int) -> dict[tuple[str, str], np.ndarray]:
    "The textbook bootstrap: resample rows (numpy choice of indices), recompute each group's TPR and selection rate."
    rng = np.random.default_rng(seed)
    g, y, p = frame['g'].to_numpy(), frame['y'].to_numpy(), frame['p'].to_numpy()
    out: dict[tuple[str, str], list[float]] = {}
    for _ in range(n_boot):
        i = rng.choice(len(g), size=len(g), replace=True)
        gi, yi, pi = g[i], y[i], p[i]
        for grp in np.unique(g):
            m = gi == grp
            out.setdefault((grp, 'selection_rate'), []).append(pi[m].mean())
            out.setdefault((grp, 'tpr'), []).append(pi[m & (yi == 1)].mean())
        srs = [np.mean(pi[gi == grp]) for grp in np.unique(g)]
        out.setdefault(('*', 'dp'), []).append(max(srs) - min(srs))
    return {k: np.array(v) for k, v in out.items()}


def _population(n: int, rng: np.random.Generator) -> pl.DataFrame:
    "Three groups with known base rates and decision rates given the label."
    g = rng.choice(np.array(['a', 'b', 'c']), size=n, p=[0.5, 0.3, 0.2])
    base = np.select([g == 'a', g == 'b'], [0.4, 0.3], 0.5)
    y = (rng.random(n) < base).astype(np.int64)
    tpr = np.select([g == 'a', g == 'b'], [0.8, 0.6], 0.7)
    fpr = np.select([g == 'a', g == 'b'], [0.2, 0.1], 0.3)
    p = (rng.random(n) < np.where(y == 1, tpr, fpr)).astype(np.int64)
    return pl.DataFrame({'g': g, 'y': y, 'p': p})

TRUTH = {('a', 'tpr'): 0.8, ('b', 'tpr'): 0.6, ('c', 'tpr'): 0.7,
         ('a', 'selection_rate'): 0.4 * 0.8 + 0.6 * 0.2, ('b', 'selection_rate'): 0.3 * 0.6 + 0.7 * 0.1,
         ('c', 'selection_rate'): 0.5 * 0.7 + 0.5 * 0.3}


def test_intervals_agree_with_row_bootstrap():
    frame = _population(3000, np.random.default_rng(1))
    slow = _slow_bootstrap(frame, 400, seed=2)
    a = fairness_audit(frame, y_true='y', y_pred='p', sensitive='g', n_boot=4000, seed=3)
    for (grp, metric), s in slow.items():
        if grp == '*':
            row = a.disparities.filter(name='demographic_parity', kind='difference').row(0, named=True)
        else:
            row = a.by_group.filter(group=f'g={grp}', metric=metric).row(0, named=True)
        lo, hi = np.quantile(s, [0.025, 0.975])
        sd = s.std()
        # Monte-Carlo error of a 2.5 % quantile from 400 resamples is about 0.25 sd; allow 0.5 sd
        assert abs(row['lower'] - lo) < 0.5 * sd and abs(row['upper'] - hi) < 0.5 * sd, (grp, metric, row, lo, hi, sd)
        assert abs((row['upper'] - row['lower']) / (hi - lo) - 1) < 0.2


def test_coverage_of_known_rates():
    rng = np.random.default_rng(10)
    hits = {k: 0 for k in TRUTH}
    dp_true = TRUTH[('c', 'selection_rate')] - TRUTH[('b', 'selection_rate')]
    hits_dp, n_sets = 0, 200
    for i in range(n_sets):
        a = fairness_audit(_population(1500, rng), y_true='y', y_pred='p', sensitive='g', n_boot=500, seed=i)
        for (grp, metric) in TRUTH:
            row = a.by_group.filter(group=f'g={grp}', metric=metric).row(0, named=True)
            hits[(grp, metric)] += row['lower'] <= TRUTH[(grp, metric)] <= row['upper']
        d = a.disparities.filter(name='demographic_parity', kind='difference').row(0, named=True)
        hits_dp += d['lower'] <= dp_true <= d['upper']
    for k, h in hits.items():
        assert 0.90 <= h / n_sets <= 0.99, (k, h / n_sets)
    assert 0.88 <= hits_dp / n_sets <= 0.99, hits_dp / n_sets


def test_regression_intervals_agree_with_row_bootstrap():
    rng = np.random.default_rng(5)
    n = 4000
    g = rng.choice(np.array(['a', 'b']), size=n, p=[0.7, 0.3])
    y = rng.normal(50, 10, n)
    pred = y + rng.standard_t(4, n) * np.where(g == 'a', 3.0, 5.0) + np.where(g == 'a', 0.0, 1.0)
    frame = pl.DataFrame({'g': g, 'y': y, 'pred': pred})
    a = fairness_audit(frame, y_true='y', y_pred='pred', task='regression', sensitive='g', n_boot=3000, seed=1)
    e = pred - y
    slow: dict[tuple[str, str], list[float]] = {}
    for _ in range(400):
        i = rng.choice(n, size=n, replace=True)
        for grp in ('a', 'b'):
            m = g[i] == grp
            ei, pi = e[i][m], pred[i][m]
            for name, v in (('mean_prediction', pi.mean()), ('mean_error', ei.mean()), ('mae', np.abs(ei).mean()),
                            ('rmse', np.sqrt((ei ** 2).mean()))):
                slow.setdefault((grp, name), []).append(v)
    for (grp, metric), s in slow.items():
        row = a.by_group.filter(group=f'g={grp}', metric=metric).row(0, named=True)
        lo, hi = np.quantile(s, [0.025, 0.975])
        sd = np.std(s)
        assert abs(row['lower'] - lo) < 0.5 * sd and abs(row['upper'] - hi) < 0.5 * sd, (grp, metric, row, lo, hi)
    vals = a.by_group.filter(group='g=b', metric='mae')['value'].item()
    assert abs(vals - np.abs(e[g == 'b']).mean()) < 1e-9


def test_small_groups_flagged_and_left_out():
    rng = np.random.default_rng(0)
    frame = _population(2000, rng).vstack(pl.DataFrame({'g': ['d'] * 3, 'y': [1, 1, 0], 'p': [1, 1, 1]}))
    a = fairness_audit(frame, y_true='y', y_pred='p', sensitive='g', n_boot=200)
    d = a.by_group.filter(group='g=d')
    assert d['too_small'].all() and d['lower'].is_null().all()
    assert d['reason'][0] == '3 rows (< min_group_size 30)'
    dp = a.disparities.filter(name='demographic_parity', kind='difference').row(0, named=True)
    assert 'g=d' not in (dp['worst_group'], dp['best_group']) and dp['n_groups'] == 3
    # a group with no positives: TPR null and flagged, not an error
    frame2 = _population(2000, rng).vstack(pl.DataFrame({'g': ['e'] * 40, 'y': [0] * 40, 'p': [0, 1] * 20}))
    t = fairness_audit(frame2, y_true='y', y_pred='p', sensitive='g', n_boot=50).by_group.filter(group='g=e', metric='tpr')
    assert t['value'].item() is None and t['too_small'].item() and t['reason'].item() == 'no positives'


def test_bad_inputs(acs):
    kw = dict(y_true='employed', sensitive='SEX', n_boot=10)
    with pytest.raises(DataError, match='at least two groups'):
        fairness_audit(acs.filter(pl.col('SEX') == '1'), y_pred='yhat', **kw)
    with pytest.raises(DataError, match=r"fill_null\('missing'\)"):
        fairness_audit(acs.with_columns(SEX=pl.when(pl.col('AGEP') > 80).then(None).otherwise(pl.col('SEX'))), y_pred='yhat', **kw)
    with pytest.raises(DataError, match='pass them as score='):
        fairness_audit(acs, y_pred='score', **kw)
    with pytest.raises(DataError, match='pass them as y_pred='):
        fairness_audit(acs, score='yhat', **kw)
    with pytest.raises(DataError, match="task='regression'"):
        fairness_audit(acs, y_pred='yhat', **{**kw, 'y_true': 'AGEP'})
    with pytest.raises(DataError, match='`nope` not found'):
        fairness_audit(acs, y_pred='nope', **kw)
    with pytest.raises(InvalidParameter, match="'n_boot' parameter of fairness_audit must be an int >= 0. Got -1"):
        fairness_audit(acs, y_pred='yhat', **{**kw, 'n_boot': -1})
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(InvalidParameter, match=r"'confidence' parameter of fairness_audit must be a float in \(0, 1\)"):
            fairness_audit(acs, y_pred='yhat', confidence=c, **kw)
    with pytest.raises(InvalidParameter, match='y_pred= .* or its probabilities as score='):
        fairness_audit(acs, **kw)


def test_result_renders(acs):
    a = fairness_audit(acs, y_true='employed', score='score', sensitive=['SEX', 'RAC1P'], n_boot=100)
    d = json.loads(json.dumps(a.to_dict()))
    assert d['verdict']['overall'] in ('passed', 'failed', 'undetermined')
    assert {r['name'] for r in d['disparities']} >= {'demographic_parity', 'equalized_odds', 'equal_opportunity',
                                                     'disparate_impact', 'predictive_parity', 'calibration'}
    assert 'too small to judge' in str(a) and 'Verdict:' in str(a)
    assert '<table' in a._repr_html_()
    fig = a.figure('tpr')
    assert len(fig.axes) == 3
    v = a.verdict({'demographic_parity': 0.5, 'disparate_impact': 0.0})
    assert v.overall == 'passed'
