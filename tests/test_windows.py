"""Drift over time (mlwork.drift.windows): windows before/after an injected drift, coverage of N-row windows,
importance-weighted severity against an independent recomputation, prediction/target drift, bad input."""
import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.core import DataError, InvalidParameter
from mlwork.drift.univariate import DriftDetector
from mlwork.synthetic import Drift, LabelShift, generate
from mlwork.drift.windows import WindowedDrift, drift_over_time

FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount',
            'loan_purpose', 'employment', 'region']
JULY = dt.datetime(2024, 7, 1)


def _bound(n, p=0.05, q=0.999):
    "Largest count of alarms compatible with a rate of at most p in n trials (one-sided, 0.1 % level)."
    return int(stats.binom.ppf(q, n, p))


def _with_prediction(frame):
    "A stand-in model score that depends mostly on income, so income drift moves it."
    z = (pl.col('income') / 40_000 - pl.col('debt_ratio')).clip(-20, 20)
    return frame.with_columns((1 / (1 + (-z).exp())).alias('score'))


@pytest.fixture(scope='module')
def data():
    reference = _with_prediction(generate('credit', n_rows=2000, seed=11).frame)
    current = _with_prediction(generate('credit', n_rows=5200, seed=12,
                                        drift=Drift(('income',), 0.8, start='2024-07-01'),
                                        label_shift=LabelShift(-0.4, start='2024-07-01')).frame)
    return reference, current


@pytest.fixture(scope='module')
def weekly(data):
    reference, current = data
    return drift_over_time(reference, current, time_column='timestamp', every='1w', columns=FEATURES,
                           prediction_column='score', target_column='repaid')


def _check_before_after(wd):
    w = wd.windows.filter(pl.col('skipped').is_null())
    before = w.filter(pl.col('window_end') <= JULY)
    after = w.filter(pl.col('window_start') >= JULY)
    assert before.height >= 5 and after.height >= 5
    assert not any('income' in d for d in before['drifted'].to_list())
    assert all('income' in d for d in after['drifted'].to_list())
    # other features: before July every column is null, so BH keeps the family-wise rate per window <= alpha
    before_alarm_windows = sum(1 for d in before['drifted'].to_list() if d)
    assert before_alarm_windows <= _bound(before.height), before_alarm_windows
    # after July income truly drifted; BH then controls the false discovery rate: bound per test
    false_after = sum(len([c for c in d if c != 'income']) for d in after['drifted'].to_list())
    assert false_after <= _bound(after.height * (len(FEATURES) - 1)), false_after
    return before, after


def test_weekly_windows_drift_starts_in_july(weekly):
    before, after = _check_before_after(weekly)
    assert weekly.mode == 'time' and weekly.every == '1w'
    # weekly windows start on Mondays and are 7 days long
    assert all(s.weekday() == 0 for s in weekly.windows['window_start'])
    assert all(e - s == dt.timedelta(days=7) for s, e in weekly.windows.select('window_start', 'window_end').iter_rows())
    assert (before['severity'] == 0).sum() >= before.height - _bound(before.height)
    assert (after['severity'] > 0).all()


def test_monthly_windows_drift_starts_in_july(data):
    reference, current = data
    wd = drift_over_time(reference, current.sample(2400, seed=3), time_column='timestamp', every='1mo', columns=FEATURES)
    assert wd.windows.height == 12
    assert wd.windows['window_start'].to_list() == [dt.datetime(2024, m, 1) for m in range(1, 13)]
    _check_before_after(wd)


def test_prediction_and_target_reported_separately(weekly):
    w = weekly.windows.filter(pl.col('skipped').is_null())
    before = w.filter(pl.col('window_end') <= JULY)
    after = w.filter(pl.col('window_start') >= JULY)
    assert weekly.roles['score'] == 'prediction' and weekly.roles['repaid'] == 'target'
    assert all('score' not in d and 'repaid' not in d for d in w['drifted'].to_list())
    assert after['prediction_drift'].all()
    # a binary target tested by KS (ties make it conservative) on ~100 rows a week: high power, not certainty
    assert after['target_drift'].mean() >= 0.9, after['target_drift'].to_list()
    assert before['prediction_drift'].sum() <= _bound(before.height)
    assert before['target_drift'].sum() <= _bound(before.height)
    lg = weekly.long()
    assert set(lg.filter(pl.col('column') == 'score')['role']) == {'prediction'}
    assert lg.height == len(weekly.results) * (len(FEATURES) + 2)


def test_no_prediction_or_target_gives_nulls(data):
    reference, current = data
    wd = drift_over_time(reference, current.head(1000), every='1mo', columns=['income'])
    assert wd.windows['prediction_drift'].null_count() == wd.windows.height
    assert wd.windows['target_drift'].null_count() == wd.windows.height


@pytest.mark.parametrize('size', [137, 500, 5200, 6000])
def test_row_windows_cover_every_row_once(data, size):
    reference, current = data
    shuffled = current.sample(fraction=1.0, shuffle=True, seed=5)
    wd = drift_over_time(reference, shuffled, rows=size, columns=['income', 'region'], min_rows=30)
    w = wd.windows
    assert w['rows'].sum() == shuffled.height
    assert w['window_start'][0] == 0 and w['window_end'][-1] == shuffled.height
    assert (w['window_start'][1:] == w['window_end'][:-1]).all()          # contiguous, no overlap
    assert (w['rows'] == w['window_end'] - w['window_start']).all()
    assert (w['rows'][:-1] == size).all()
    for start, res in wd.results.items():                                   # each result saw its window's rows
        assert res.columns.filter(pl.col('column') == 'income')['n_current'][0] == w.filter(pl.col('window_start') == start)['rows'][0]
    last = w['rows'][-1]
    assert (w['skipped'][-1] is None) == (last >= 30)


def test_row_windows_in_time_order(data):
    reference, current = data
    shuffled = current.sample(fraction=1.0, shuffle=True, seed=6)
    wd = drift_over_time(reference, shuffled, rows=400, time_column='timestamp', columns=['income'])
    w = wd.windows
    assert w['rows'].sum() == shuffled.height
    assert (w['window_start'][1:] >= w['window_end'][:-1]).all()
    early = w.filter(pl.col('window_end') < JULY)
    late = w.filter(pl.col('window_start') >= JULY)
    assert not any(early['drifted_count']) and all(late['drifted_count'] == 1)


def test_importance_weighting(data):
    reference, current = data
    cur = current.filter(pl.col('timestamp') >= JULY).head(800)
    zero = drift_over_time(reference, cur, rows=200, columns=['income', 'age'], importance={'income': 0.0, 'age': 3.0})
    full = drift_over_time(reference, cur, rows=200, columns=['income', 'age'], importance={'income': 3.0, 'age': 0.0})
    assert all('income' in d for d in zero.windows['drifted'].to_list())
    assert (zero.windows.filter(pl.col('drifted').list.contains('age').not_())['severity'] == 0).all()
    assert (full.windows['severity'] > 0).all()


def test_severity_matches_formula(data):
    reference, current = data
    imp = {'income': 2.0, 'age': 1.0, 'region': 1.0}
    wd = drift_over_time(reference, current, every='1mo', columns=list(imp), importance=imp, cap=1.5)
    total = sum(imp.values())
    lg = wd.long()
    for row in wd.windows.filter(pl.col('skipped').is_null()).iter_rows(named=True):
        cells = lg.filter((pl.col('window_start') == row['window_start']) & pl.col('drift'))
        expected = sum(imp[c] / total * min(e / t, 1.5) for c, e, t in cells.select('column', 'effect_value', 'threshold').iter_rows())
        assert math.isclose(row['severity'], expected, rel_tol=1e-12, abs_tol=1e-12)
        assert 0 <= row['severity'] <= 1.5


def test_gaps_and_small_windows_are_skipped_with_reason(data):
    reference, current = data
    cur = current.filter((pl.col('timestamp') < dt.datetime(2024, 3, 1)) | (pl.col('timestamp') >= dt.datetime(2024, 5, 1)))
    cur = pl.concat([cur, cur.filter(pl.col('timestamp') >= dt.datetime(2024, 12, 1)).head(5)])
    wd = drift_over_time(reference, cur.head(2000).vstack(cur.tail(5)), every='1mo', columns=['income'], min_rows=50)
    skipped = dict(zip(wd.windows['window_start'], wd.windows['skipped']))
    assert skipped[dt.datetime(2024, 3, 1)] == 'no rows'
    assert skipped[dt.datetime(2024, 4, 1)] == 'no rows'
    assert skipped[dt.datetime(2024, 1, 1)] is None
    assert wd.windows['rows'].sum() == 2005
    assert all(s in (None, 'no rows') or 'min_rows 50' in s for s in wd.windows['skipped'])
    assert len(wd.results) == wd.windows['skipped'].null_count()


def test_date_column_and_default_time_column(data):
    reference, current = data
    cur = current.with_columns(pl.col('timestamp').dt.date().alias('day')).drop('timestamp').head(1500)
    wd = drift_over_time(reference, cur, every='1mo', columns=['income'])  # the only temporal column is found
    assert wd.time_column == 'day' and wd.windows.schema['window_start'] == pl.Date
    assert wd.windows['rows'].sum() == 1500


def test_detector_is_copied_and_used(data):
    reference, current = data
    det = DriftDetector(alpha=0.01, correction='bonferroni')
    wd = drift_over_time(reference, current.head(1000), every='1mo', columns=['income', 'age'], detector=det)
    assert not hasattr(det, 'columns_')
    assert all(r.alpha == 0.01 and r.correction == 'bonferroni' for r in wd.results.values())


def test_renders(weekly):
    d = weekly.to_dict()
    text = json.dumps(d)
    assert d['windows'][0]['window_start'] == '2024-01-01T00:00:00'
    assert len(d['results']) == len(weekly.results) and 'NaN' not in text
    html = weekly._repr_html_()
    assert 'Drift over time' in html and '<table' in html
    assert 'WindowedDrift(every=1w' in repr(weekly)
    fig = weekly.plot()
    assert fig.axes and fig.axes[0].get_title().startswith('effect / threshold')
    assert isinstance(weekly, WindowedDrift)


@pytest.mark.parametrize('kwargs, exc, text', [
    (dict(every='1w', rows=100), InvalidParameter, 'not both'),
    (dict(every=None), InvalidParameter, 'rows='),
    (dict(rows=0), InvalidParameter, "'rows'"),
    (dict(every='fortnight'), InvalidParameter, 'polars duration'),
    (dict(time_column='age'), DataError, 'must be Date or Datetime (found Int64)'),
    (dict(time_column='when'), DataError, 'time column `when` not found'),
    (dict(columns=['income', 'nope']), DataError, 'column `nope` not found'),
    (dict(target_column='label'), DataError, 'column `label` not found'),
    (dict(columns=['income'], importance={'age': 1.0}), DataError, 'not checked features: age'),
    (dict(columns=['income'], importance={'income': -1.0}), InvalidParameter, 'non-negative'),
    (dict(columns=['income'], importance={'income': 0.0}), InvalidParameter, 'positive total'),
    (dict(columns='income'), InvalidParameter, "'columns'"),
    (dict(detector='ks'), InvalidParameter, 'DriftDetector'),
])
def test_bad_input(data, kwargs, exc, text):
    reference, current = data
    with pytest.raises(exc, match=None) as info:
        drift_over_time(reference, current.head(300), **kwargs)
    assert text in str(info.value), str(info.value)


def test_time_column_problems(data):
    reference, current = data
    with pytest.raises(DataError, match='time_column is needed'):
        drift_over_time(reference, current.drop('timestamp').head(300), every='1w', columns=['income'])
    two = current.head(300).with_columns(pl.col('timestamp').alias('t2'))
    with pytest.raises(DataError, match='2 Date/Datetime columns'):
        drift_over_time(reference, two, columns=['income'])
    nulls = current.head(300).with_columns(pl.when(pl.col('id') == 3).then(None).otherwise(pl.col('timestamp')).alias('timestamp'))
    with pytest.raises(DataError, match='1 null values'):
        drift_over_time(reference, nulls, columns=['income'])
    # rows= needs no time column
    wd = drift_over_time(reference, current.drop('timestamp').head(300), rows=100, columns=['income'])
    assert wd.time_column is None and wd.windows.height == 3


def test_default_columns_skip_id_like_keys_and_name_them(data):
    reference, current = data
    cur = current.head(1200).with_columns(pl.format('k{}', pl.col('id')).alias('key'))
    ref = reference.with_columns(pl.format('k{}', pl.col('id')).alias('key'))
    wd = drift_over_time(ref, cur, every='3mo', prediction_column='score', target_column='repaid')
    assert set(wd.skipped_columns) == {'timestamp', 'id', 'key'}
    assert wd.skipped_columns['timestamp'] == 'time column'
    assert 'unique per row' in wd.skipped_columns['id'] and 'String' in wd.skipped_columns['key']
    assert not {'id', 'key', 'timestamp'} & set(wd.roles) and 'age' in wd.roles
    assert wd.to_dict()['skipped_columns'] == wd.skipped_columns and 'Not checked' in wd._repr_html_()
    kept = drift_over_time(ref, cur, every='3mo', skip_ids=False)
    assert 'id' in kept.roles and 'key' in kept.roles and set(kept.skipped_columns) == {'timestamp'}
    # a low-cardinality integer column is a feature, not a key; explicit columns are never skipped
    assert 'n_open_accounts' in wd.roles
    assert 'id' in drift_over_time(ref, cur, every='3mo', columns=['id', 'age']).roles


def test_weekly_alarm_by_reference_variation(weekly):
    "The reference has a time column and 52 weeks: the alarm is calibrated on its own weekly variation."
    rule = weekly.alarm_rule
    assert rule['rule'] == 'reference' and rule['statistic'] == 'max_effect' and rule['reference_windows'] >= 40
    k, r = rule['reference_windows'], rule['rank']
    assert r == math.floor(0.05 * (k + 1)) and math.isclose(rule['attainable_rate'], r / (k + 1))
    w = weekly.windows.filter(pl.col('skipped').is_null())
    before = w.filter(pl.col('window_end') <= JULY)
    after = w.filter(pl.col('window_start') >= JULY)
    assert before['alarm'].sum() <= _bound(before.height, rule['attainable_rate'])
    assert after['alarm'].all()                                   # income moved by 0.8 sd: one feature among nine
    assert all(b == ['income'] for b in after['beyond_reference'].to_list())
    assert set(weekly.alarm_windows) == set(w.filter(pl.col('alarm'))['window_start'].to_list())
