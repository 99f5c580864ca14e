"""The time-ordered generator (mlwork.series): AR(1) autocorrelation, seasonality, trend, category shares, the change
point's ground truth, seeding and parameter checks, each against an independent computation (numpy, scipy)."""
import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.core import InvalidParameter
from mlwork.series import Change, SeriesData, generate_series


def _centered(x):
    x = np.asarray(x, dtype=float)
    return x - x.mean()


def test_ar1_autocorrelation_and_unit_variance():
    f = generate_series(60_000, phi=0.95, weekly=0.0, yearly=0.0, seed=4).frame
    for c in ('x1', 'x3'):
        x = _centered(f[c])
        lag1 = np.dot(x[:-1], x[1:]) / np.dot(x, x)
        lag5 = np.dot(x[:-5], x[5:]) / np.dot(x, x)
        assert abs(lag1 - 0.95) < 0.01, lag1
        assert abs(lag5 - 0.95 ** 5) < 0.03, lag5            # AR(1): correlation phi^h at lag h
        assert abs(x.std() - 1.0) < 0.1
    # independent rows: no autocorrelation beyond noise (|r| < 4 / sqrt(n))
    x = _centered(generate_series(20_000, phi=0.0, weekly=0.0, yearly=0.0, seed=5).frame['x2'])
    assert abs(np.dot(x[:-1], x[1:]) / np.dot(x, x)) < 4 / np.sqrt(x.size)
    assert stats.normaltest(x).pvalue > 1e-4                  # Gaussian noise


def test_weekly_and_yearly_seasonality_amplitudes():
    # two years of hours, no noise: the weekly profile (mean by hour of the week) has amplitude `weekly`
    f = generate_series(24 * 730, phi=0.0, weekly=2.0, yearly=0.0, seed=1).frame
    prof = f.group_by(pl.col('timestamp').dt.weekday() * 24 + pl.col('timestamp').dt.hour()).agg(pl.col('x1').mean())
    amp = (prof['x1'].max() - prof['x1'].min()) / 2
    assert 1.8 < amp < 2.2, amp
    g = generate_series(24 * 730, phi=0.0, weekly=0.0, yearly=3.0, seed=1).frame
    months = g.group_by(pl.col('timestamp').dt.month()).agg(pl.col('x2').mean())['x2']
    assert 2.4 < (months.max() - months.min()) / 2 < 3.1        # monthly means of a sine with amplitude 3
    # the seasonal waves repeat: the same hour one year apart (364 days = 52 weeks, weekly phase kept) is close in mean
    w = generate_series(24 * 7 * 104, phi=0.0, weekly=1.0, yearly=1.0, seed=2).frame['x1'].to_numpy()
    n = 24 * 7 * 52
    assert abs((w[n:] - w[:n]).mean()) < 0.05


def test_trend_is_linear_in_years():
    f = generate_series(24 * 730, phi=0.0, weekly=0.0, yearly=0.0, trend=1.5, seed=0).frame
    years = (f['timestamp'] - f['timestamp'][0]).dt.total_hours().to_numpy() / (365.25 * 24)
    slope = stats.linregress(years, f['x4'].to_numpy()).slope
    assert abs(slope - 1.5) < 0.05, slope


def test_segment_shares_and_its_shift():
    probs = (0.6, 0.25, 0.15)
    f = generate_series(80_000, phi=0.0, weekly=0.0, yearly=0.0, probs=probs, seed=7).frame
    counts = f['segment'].value_counts().sort('segment')['count'].to_numpy()
    assert stats.chisquare(counts, np.array(probs) * counts.sum()).pvalue > 1e-4
    # shifting the latent score by d moves the shares to Phi(c - d) differences (c = normal quantiles of the cumulative probs)
    at = f['timestamp'][40_000]
    g = generate_series(80_000, phi=0.0, weekly=0.0, yearly=0.0, probs=probs, seed=7,
                        change=Change(at, 'segment', shift=0.5)).frame
    after = g.filter(pl.col('timestamp') >= at)['segment'].value_counts().sort('segment')['count'].to_numpy()
    cuts = stats.norm.ppf(np.cumsum(probs)[:-1])
    expected = np.diff(np.concatenate([[0.0], stats.norm.cdf(cuts - 0.5), [1.0]]))
    assert stats.chisquare(after, expected * after.sum()).pvalue > 1e-4


def test_change_truth_abrupt_and_gradual():
    at = dt.datetime(2023, 3, 6)
    base = generate_series(24 * 120, seed=9)
    ab = generate_series(24 * 120, seed=9, change=Change(at, ('x2', 'x3'), shift=-1.25))
    assert isinstance(ab, SeriesData) and ab.changed_columns == ['x2', 'x3'] and ab.change_at == at
    d = (ab.frame['x2'] - base.frame['x2']).to_numpy()
    after = (ab.frame['timestamp'] >= at).to_numpy()
    assert np.allclose(d[after], -1.25) and np.allclose(d[~after], 0.0)
    for c in ('x1', 'x4', 'segment'):                          # the other columns are the same draws
        assert ab.frame[c].equals(base.frame[c])
    assert np.array_equal(ab.truth['change_fraction'].to_numpy(), after.astype(float))
    gr = generate_series(24 * 120, seed=9, change=Change(at, 'x1', shift=2.0, kind='gradual', ramp='10d'))
    hours = (gr.frame['timestamp'] - at).dt.total_hours().to_numpy()
    expected = 2.0 * np.clip(hours / 240, 0, 1)
    assert np.allclose((gr.frame['x1'] - base.frame['x1']).to_numpy(), expected)
    assert gr.to_dict()['change'] == {'at': '2023-03-06T00:00:00', 'columns': ['x1'], 'shift': 2.0, 'kind': 'gradual', 'ramp': '10d'}


def test_seeded_and_shaped():
    a = generate_series(500, n_numeric=2, target=True, seed=11, freq='30m', start='2024-02-01')
    b = generate_series(500, n_numeric=2, target=True, seed=11, freq='30m', start='2024-02-01')
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(generate_series(500, n_numeric=2, target=True, seed=12, freq='30m', start='2024-02-01').frame)
    assert a.frame.columns == ['timestamp', 'x1', 'x2', 'segment', 'target']
    assert a.frame.schema['timestamp'] == pl.Datetime('us') and a.frame.schema['segment'] == pl.Enum(['a', 'b', 'c'])
    steps = a.frame['timestamp'].diff().drop_nulls().unique().to_list()
    assert steps == [dt.timedelta(minutes=30)]
    assert set(a.frame['target'].unique().to_list()) == {0, 1}
    # the target follows the features: x1 higher where target is 1 (positive weight), x2 lower (negative)
    t = a.frame['target'].to_numpy() == 1
    assert a.frame['x1'].to_numpy()[t].mean() > a.frame['x1'].to_numpy()[~t].mean()
    assert a.features == ['x1', 'x2', 'segment'] and 'no change' in repr(a)


@pytest.mark.parametrize('kwargs, text', [
    (dict(n_rows=1), "'n_rows'"), (dict(phi=1.0), "'phi'"), (dict(phi=-0.1), "'phi'"), (dict(weekly=-1.0), "'weekly'"),
    (dict(freq='1mo'), "no 'mo'"), (dict(freq='0h'), "'freq'"), (dict(probs=(1.0,)), "'probs'"),
    (dict(probs=(0.5, 0.4)), "'probs'"), (dict(seed=-1), "'seed'"), (dict(target=1), "'target'"),
    (dict(change='2024-01-01'), "'change'"), (dict(n_numeric=0), "'n_numeric'"), (dict(start='soon'), 'ISO date'),
    (dict(change=Change('2024-01-01', 'x7')), 'unknown features'),
])
def test_bad_parameters(kwargs, text):
    with pytest.raises(InvalidParameter) as info:
        generate_series(**{'n_rows': 100, **kwargs})
    assert text in str(info.value), str(info.value)


@pytest.mark.parametrize('kwargs, text', [
    (dict(columns=()), "'columns'"), (dict(columns=('x1', 'x1')), "'columns'"), (dict(kind='step'), "'kind'"),
    (dict(ramp='1y'), "'ramp'"), (dict(shift=float('nan')), "'shift'"),
])
def test_bad_change(kwargs, text):
    args = {'at': '2024-01-01', 'columns': ('x1',), **kwargs}
    with pytest.raises(InvalidParameter) as info:
        Change(**args)
    assert text in str(info.value), str(info.value)
