"""mlwork.data.profile against whylogs itself.

The oracle is whylogs' own per-value path, `why.log(pandas=...)`, on the same data (`to_whylogs_pandas`
only chooses pandas dtypes that keep integers integral and nulls null). Deterministic parts of a
profile (counts, types, min, max, exact cardinality and frequent items below the sketch's capacity)
must be equal; randomised or order-dependent sketches must agree within their documented error:
KLL's normalised rank error for k=1024 (whylogs' default), HyperLogLog's relative standard error
1.04/sqrt(2^lg_k) (3 sigma), and the frequent-items sketch's a-priori error epsilon*N.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError, NotFound
from mlwork.data.profile import Profile, profile_dask, profile_frame, profile_partitions, profile_path, profile_whylogs
from mlwork.synthetic import generate
from mlwork.checks import column_kind as _checks_column_kind

import whylogs_sketching as ds  # noqa: E402  (after mlwork.data.profile, which shims numpy for whylogs)


def column_kind(dtype: pl.DataType) -> str | None:
    "How mlwork.data.profile profiles a dtype: mlwork.checks' rule for the purpose 'profile'."
    return _checks_column_kind(dtype, purpose='profile')
from whylogs.core import DatasetProfileView  # noqa: E402

KLL_EPS = ds.kll_doubles_sketch.get_normalized_rank_error(1024, False)  # single-quantile rank error (~0.3 %)
HLL_RSE = 1.04 / math.sqrt(2 ** 12)  # whylogs' default hll_lg_k = 12
FI_CAPACITY = 768  # frequent-items sketch (lg_max_k = 10) counts exactly below this many distinct items
FI_EPS = ds.frequent_strings_sketch.get_epsilon_for_lg_size(10)

# whylogs' own path (the oracle) averages columns holding ±inf: numpy warns, and that is expected
pytestmark = pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')


def _frame(kind: str, n: int, seed: int) -> pl.DataFrame:
    "A synthetic credit/fraud frame with every kind of column and every kind of awkward value."
    df = generate(kind, n_rows=n, seed=seed, missing=0.05, outliers=0.01, corrupt=0.02).frame
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.choice(n, n // 50, replace=False)] = np.nan
    x[rng.choice(n, n // 100, replace=False)] = np.inf
    x[rng.choice(n, n // 200, replace=False)] = -np.inf
    words = np.array(['x' * 200 + str(k) for k in range(6)] + ['short'])
    return df.with_columns(
        pl.Series('weird_float', x).scatter(rng.choice(n, n // 40, replace=False), None),
        pl.Series('flag', rng.random(n) < 0.3).scatter(rng.choice(n, n // 30, replace=False), None),
        pl.Series('cat', rng.choice(['a', 'b', 'c'], n)).cast(pl.Categorical),
        pl.Series('small_uint', rng.integers(0, 200, n).astype(np.uint8)),
        pl.Series('f32', rng.normal(size=n).astype(np.float32)),
        pl.Series('long_text', words[rng.integers(0, len(words), n)]),
        pl.Series('many_ints', rng.integers(0, 3000, n)).scatter(rng.choice(n, n // 20, replace=False), None),
        pl.Series('empty', [None] * n, dtype=pl.Float64),
    )


@pytest.fixture(scope='module')
def frames() -> dict[str, pl.DataFrame]:
    return {'credit': _frame('credit', 6000, 11), 'fraud': _frame('fraud', 6000, 12)}


def _rank_ok(values: np.ndarray, q: float, est: float, eps: float) -> bool:
    "Whether `est` is a `q`-quantile of `values` within rank error `eps` (ties allowed)."
    lo = np.searchsorted(values, est, side='left') / values.size
    hi = np.searchsorted(values, est, side='right') / values.size
    return lo - eps <= q <= hi + eps


def _truth(s: pl.Series) -> np.ndarray:
    "The values a distribution sketch sees: non-null, non-NaN, as float64, sorted."
    f = s.drop_nulls()
    if column_kind(s.dtype) == 'float':
        f = f.cast(pl.Float64).drop_nans()
    return np.sort(f.cast(pl.Float64).to_numpy())


def _items(cv) -> set[tuple]:
    fi = cv.get_metric('frequent_items')
    if fi is None or fi.frequent_strings.value.is_empty():
        return set()
    return {(i.value, i.est, i.lower, i.upper) for i in fi.to_summary_dict()['frequent_strings']}


def _check_column(name: str, s: pl.Series, ours, ref, one_stream: bool = True) -> None:
    kind = column_kind(s.dtype)
    assert sorted(ours.get_metric_names()) == sorted(ref.get_metric_names()), name
    a, b = ours.to_summary_dict(), ref.to_summary_dict()
    for key in ('counts/n', 'counts/null', 'counts/inf', 'counts/true', 'types/integral', 'types/fractional',
                'types/boolean', 'types/string', 'types/object', 'types/tensor'):
        assert int(a[key]) == int(b[key]), (name, key, a[key], b[key])
    nan = int(s.cast(pl.Float64).is_nan().sum() or 0) if kind == 'float' else 0
    assert a['counts/nan'] == nan, name  # mlwork: real NaN only
    assert b['counts/nan'] == (nan + s.null_count() if kind == 'float' else 0), name  # whylogs: nulls too
    if 'ints/min' in a:
        assert (a['ints/min'], a['ints/max']) == (b['ints/min'], b['ints/max']), name
    if 'distribution/n' in a:
        assert a['distribution/n'] == b['distribution/n'], name
        if a['distribution/n']:
            truth = _truth(s)
            assert (a['distribution/min'], a['distribution/max']) == (b['distribution/min'], b['distribution/max']), name
            assert (a['distribution/min'], a['distribution/max']) == (truth[0], truth[-1]), name
            if np.isfinite(b['distribution/mean']):
                assert a['distribution/mean'] == pytest.approx(b['distribution/mean'], rel=1e-9, abs=1e-12), name
                assert a['distribution/stddev'] == pytest.approx(b['distribution/stddev'], rel=1e-6, abs=1e-12), name
            else:  # inf in the data: both means are inf or nan alike
                assert str(a['distribution/mean']) == str(b['distribution/mean']), name
            for key, q in (('q_01', .01), ('q_05', .05), ('q_25', .25), ('median', .5), ('q_75', .75), ('q_99', .99)):
                assert _rank_ok(truth, q, a[f'distribution/{key}'], KLL_EPS), (name, key)
                assert _rank_ok(truth, q, b[f'distribution/{key}'], KLL_EPS), (name, key, 'whylogs')
    if 'cardinality/est' in a:
        distinct = s.drop_nulls().n_unique() if kind != 'float' else _truth(s).size and np.unique(_truth(s)).size
        if s.null_count() < s.len():
            assert abs(a['cardinality/est'] - distinct) <= 3 * HLL_RSE * distinct + 1e-6, name
            assert abs(a['cardinality/est'] - b['cardinality/est']) <= 3 * HLL_RSE * distinct + 1e-6, name
        if one_stream and (kind in ('str', 'bool', 'float') or distinct <= FI_CAPACITY):  # same values, same order: same sketch
            assert a['cardinality/est'] == pytest.approx(b['cardinality/est'], rel=1e-12), name
    if 'frequent_items/frequent_strings' in a:
        ia, ib = _items(ours), _items(ref)
        if s.drop_nulls().n_unique() <= FI_CAPACITY:
            assert ia == ib, name
        else:  # beyond capacity both are sketches: true counts lie within each one's bounds
            counts = dict(s.drop_nulls().cast(pl.String).value_counts().iter_rows())
            n = s.len() - s.null_count()
            for value, est, lower, upper in ia:
                assert lower <= counts[value] <= upper and abs(est - counts[value]) <= FI_EPS * n, (name, value)
            heavy = {v for v, c in counts.items() if c > 2 * FI_EPS * n}
            assert heavy <= {i[0] for i in ia} and heavy <= {i[0] for i in ib}, name


@pytest.mark.parametrize('kind', ['credit', 'fraud'])
def test_fast_profile_equals_whylogs(frames, kind):
    df = frames[kind]
    ours, ref = profile_frame(df), profile_whylogs(df)
    assert sorted(ours.view.get_columns()) == sorted(ref.view.get_columns())
    kinds = {column_kind(t) for t in df.schema.values()}
    assert kinds == {'int', 'bool', 'float', 'str', 'obj'}, kinds
    assert any(isinstance(t, pl.Enum) for t in df.schema.values()) and pl.Datetime('us') in df.schema.values()
    for name in df.columns:
        _check_column(name, df[name], ours.view.get_column(name), ref.view.get_column(name))


def test_merge_matches_union_within_sketch_error(frames):
    df = frames['credit']
    parts = [df.slice(0, 1000), df.slice(1000, 2500), df.slice(3500, 2500)]
    merged = profile_frame(parts[0]).merge(profile_frame(parts[1])).merge(profile_frame(parts[2]))
    whole = profile_frame(df)
    ref = profile_whylogs(df)
    assert merged.columns == df.columns and merged.n_rows == df.height
    m, w = merged.summary(), whole.summary()
    exact = ['column', 'dtype', 'count', 'nulls', 'nan', 'inf', 'types', 'min', 'max', 'top']
    assert m.select(exact).equals(w.select(exact))
    assert m['mean'].drop_nulls().to_list() == pytest.approx(w['mean'].drop_nulls().to_list(), rel=1e-9, nan_ok=True)
    assert m['stddev'].drop_nulls().to_list() == pytest.approx(w['stddev'].drop_nulls().to_list(), rel=1e-6, nan_ok=True)
    for name in df.columns:
        _check_column(name, df[name], merged.view.get_column(name), ref.view.get_column(name), one_stream=False)


def test_saved_profile_is_read_by_whylogs(frames, tmp_path):
    df = frames['fraud']
    p = profile_frame(df)
    path = p.save(tmp_path / 'profiles' / 'fraud' / 'v3.bin')
    view = DatasetProfileView.read(str(path))  # whylogs itself
    assert sorted(view.get_columns()) == sorted(df.columns)
    summary = view.to_pandas()  # whylogs' own summary of our file
    for name in df.columns:
        assert summary.loc[name, 'counts/n'] == df.height
        assert summary.loc[name, 'counts/null'] == df[name].null_count() + (
            int(df[name].cast(pl.Float64).is_nan().sum() or 0) if column_kind(df[name].dtype) == 'float' else 0)
    again = DatasetProfileView.deserialize(path.read_bytes())
    assert again.get_column('hour').get_metric('ints').max.value == df['hour'].max()
    # and the other way round: a profile whylogs wrote merges with ours
    ref = profile_whylogs(df.head(100))
    ref_path = tmp_path / 'whylogs.bin'
    ref_path.write_bytes(ref.view.serialize())  # whylogs' own serializer
    both = Profile.load(ref_path).merge(Profile.load(path))
    assert both.n_rows == df.height + 100


def test_save_is_atomic(frames, tmp_path, monkeypatch):
    p = profile_frame(frames['credit'].head(200))
    path = p.save(tmp_path / 'v1.bin')
    before = path.read_bytes()
    monkeypatch.setattr(DatasetProfileView, '_do_write', lambda self, f: (f.write(b'WHY1partial'), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        profile_frame(frames['credit'].head(300)).save(path)
    assert path.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ['v1.bin']
    monkeypatch.undo()
    path.write_bytes(before[:40])
    with pytest.raises(DataError, match='is not a whylogs profile'):
        Profile.load(path)
    with pytest.raises(NotFound):
        Profile.load(tmp_path / 'nope.bin')


def test_numpy_shim_is_what_lets_whylogs_run():
    "whylogs 1.6.4 names np.unicode_ (gone in numpy 2): importing mlwork.data.profile must restore it, narrowly."
    probe = textwrap.dedent('''
        import numpy as np, sys
        assert np.__version__.split('.')[0] >= '2', np.__version__
        {pre}
        from whylogs.core.datatypes import String
        try:
            String.match(np.dtype('datetime64[ns]'))  # reaches `issubclass(t, (str, np.unicode_))`
        except AttributeError as e:
            print('broken:', e); sys.exit(3)
        print('ok', np.unicode_ is np.str_)
    ''')
    run = lambda pre: subprocess.run([sys.executable, '-c', probe.format(pre=pre)], capture_output=True, text=True)
    with_shim = run('import mlwork.data.profile')
    assert with_shim.returncode == 0 and with_shim.stdout.strip() == 'ok True', with_shim.stdout + with_shim.stderr
    without = run('')
    if without.returncode == 0:
        pytest.skip('whylogs no longer needs the np.unicode_ shim: remove it from mlwork.data.profile')
    assert without.returncode == 3 and 'unicode_' in without.stdout, without.stdout + without.stderr
    # and mlwork's own numpy is untouched otherwise
    assert np.str_ is np.dtype('U').type


def test_profile_partitions_and_frame_agree(frames, tmp_path):
    df = frames['credit']
    for i in range(3):
        df.slice(i * 2000, 2000).write_parquet(tmp_path / f'part-{i}.parquet')
    streamed = profile_partitions(str(tmp_path / '*.parquet'), partition_rows=1500)
    lazy = profile_partitions(df.lazy(), partition_rows=2500, columns=['age', 'region'])
    whole = profile_frame(df)
    exact = ['column', 'count', 'nulls', 'nan', 'types', 'min', 'max', 'top']
    assert streamed.summary().select(exact).equals(whole.summary().select(exact))
    assert lazy.columns == ['age', 'region'] and lazy.n_rows == df.height


def test_report_is_small_and_standalone(frames, tmp_path):
    p = profile_frame(frames['fraud'])
    out = p.to_report('Fraud profile', meta={'dataset': 'fraud', 'version': 3}).save(tmp_path / 'profile.html')
    text = out.read_text()
    assert '<svg' in text and 'merchant_category' in text and '<script' not in text
    assert out.stat().st_size < 1_500_000
    assert p.to_dict()['rows'] == frames['fraud'].height and '<table' in p._repr_html_()
    edges, counts = p.histogram('distance_km', bins=20)
    assert len(edges) == 21 and counts.sum() == pytest.approx(p.summary().filter(pl.col('column') == 'distance_km')
                                                              ['count'].item() - frames['fraud']['distance_km'].null_count()
                                                              - int(frames['fraud']['distance_km'].is_nan().sum()), rel=1e-9)


def test_profile_path():
    assert profile_path('/ws/profiles', 'credit', 7) == '/ws/profiles/credit/v7.bin'


def test_dask_cluster_equals_in_process_merge(frames, tmp_path):
    import distributed  # dev dependency (dask[distributed])
    import dask.dataframe as dd
    df = frames['fraud']
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f'part-{i}.parquet'))
        df.slice(i * 1500, 1500).write_parquet(paths[-1])
    # in process, the same way: profile each file, ship it as bytes (HLL sketches lose their order-dependent
    # HIP estimate when serialized), merge in file order
    parts = [Profile.from_bytes(profile_frame(pl.read_parquet(p)).to_bytes()) for p in paths]
    local = parts[0]
    for p in parts[1:]:
        local = local.merge(p)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_cluster = profile_dask(paths, client=client)
        from_ddf = profile_dask(dd.read_parquet(paths), client=client, columns=['hour', 'channel'])
    exact = ['column', 'count', 'nulls', 'nan', 'inf', 'types', 'min', 'max', 'mean', 'distinct_est', 'top']
    a, b = on_cluster.summary(), local.summary()
    assert sorted(a['column']) == sorted(b['column'])
    a, b = a.sort('column'), b.sort('column')
    for col in exact:
        if col != 'mean':
            assert a[col].to_list() == b[col].to_list(), col
    assert a['mean'].fill_null(0).to_list() == pytest.approx(b['mean'].fill_null(0).to_list(), rel=1e-12, nan_ok=True)
    for name in df.columns:
        if column_kind(df[name].dtype) not in ('int', 'float', 'bool'):
            continue
        truth = _truth(df[name])
        row = a.filter(pl.col('column') == name)
        if truth.size and row['p50'].item() is not None:
            for q in ('p05', 'p50', 'p95'):
                assert _rank_ok(truth, int(q[1:]) / 100, row[q].item(), 2 * KLL_EPS), (name, q)
    s = from_ddf.summary()
    assert s['column'].to_list() == ['hour', 'channel'] and s['count'].to_list() == [df.height] * 2
    assert s['nulls'].to_list() == [df['hour'].null_count(), df['channel'].null_count()]
