"""DriftSummary and drift_report: statistics against numpy/Counter oracles, the JSON twin, atomic writes,
and a real browser (headless chromium) rendering the standalone report."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError, InvalidParameter
from mlwork.drift.power import drift_benchmark
from mlwork.drift.univariate import DriftDetector
from mlwork.drift.report import SUMMARY_SCHEMA_VERSION, DriftSummary, drift_report
from mlwork.synthetic import Drift, generate
from mlwork.drift.windows import drift_over_time


@pytest.fixture(scope='module')
def messy():
    "Reference and current with nulls, NaN, infinities, a constant column, booleans, enums and an unseen category."
    rng = np.random.default_rng(7)
    n, m = 3000, 2500
    def num(r, k, shift):
        x = r.normal(shift, 1, k)
        x[r.random(k) < 0.03] = np.nan
        x[:3] = [np.inf, -np.inf, 40.0]  # 40: far beyond the reference range
        return x
    ref = pl.DataFrame({
        'x': num(rng, n, 0.0), 'k': rng.integers(0, 12, n), 'wide': rng.integers(0, 10_000, n),
        'const': np.full(n, 3.0), 'flag': rng.random(n) < 0.3,
        'cat': pl.Series(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), n)).cast(pl.Enum(list('abcdefghijklmnopqrstuvwxyz'))),
        'city': rng.choice(['paris', 'rome', 'oslo', None], n).tolist(),
    })
    city = rng.choice(['paris', 'rome', 'oslo', 'lima', 'kyiv'], m).tolist()
    cur = pl.DataFrame({
        'x': num(rng, m, 0.5), 'k': rng.integers(2, 15, m), 'wide': rng.integers(0, 12_000, m),
        'const': np.full(m, 3.0), 'flag': rng.random(m) < 0.5,
        'cat': pl.Series(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), m)).cast(pl.Enum(list('abcdefghijklmnopqrstuvwxyz'))),
        'city': city,
    })
    res = DriftDetector().fit(ref).score(cur)
    return ref, cur, res, DriftSummary.from_frames(ref, cur, res, top_k=10)


def _finite(s: pl.Series) -> np.ndarray:
    x = s.cast(pl.Float64).drop_nulls().to_numpy()
    return x[np.isfinite(x)]


def test_numeric_bins_and_stats_match_numpy(messy):
    ref, cur, res, s = messy
    for name in ('x', 'k', 'wide', 'const'):
        f = s.feature(name)
        edges = np.array(f.bins['edges'])
        for side, frame in (('reference', ref), ('current', cur)):
            x = _finite(frame[name])
            counts = f.bins[side]
            hist, _ = np.histogram(x, bins=edges)  # numpy's bins: left-closed, the last one closed
            assert counts[1:-1] == hist.tolist(), (name, side)
            assert counts[0] == int((x < edges[0]).sum()) and counts[-1] == int((x > edges[-1]).sum())
            st = f.stats[side]
            assert st['n'] == len(x) and st['missing'] == frame.height - len(x)
            np.testing.assert_allclose([st['mean'], st['min'], st['max']], [x.mean(), x.min(), x.max()], rtol=1e-12)
            np.testing.assert_allclose([st[k] for k in ('q05', 'q25', 'q50', 'q75', 'q95')],
                                       np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95]), rtol=1e-12)
            if len(x) > 1:
                np.testing.assert_allclose(st['std'], x.std(ddof=1), rtol=1e-9, atol=1e-12)
        row = res.columns.filter(pl.col('column') == name).row(0, named=True)
        assert sum(f.bins['reference']) == row['n_reference'] and sum(f.bins['current']) == row['n_current']
    x = s.feature('x')
    assert x.bins['reference'][-1] >= 1 and x.bins['current'][-1] >= 1  # 40.0 lands above (±inf are missing)
    assert x.stats['reference']['missing'] == ref['x'].is_nan().sum() + 2
    assert len(x.bins['edges']) == 31 and s.feature('k').bins['edges'][:2] == [-0.5, 0.5]  # narrow ints: one bin each
    assert s.feature('const').bins['edges'] == [2.5, 3.5]


def test_categorical_bins_match_counter(messy):
    ref, cur, res, s = messy
    for name in ('cat', 'city', 'flag'):
        f = s.feature(name)
        rc = Counter(str(v).lower() if isinstance(v, bool) else v for v in ref[name].to_list() if v is not None)
        cc = Counter(str(v).lower() if isinstance(v, bool) else v for v in cur[name].to_list() if v is not None)
        cats = f.bins['categories']
        assert f.bins['reference'][:-2] == [rc[c] for c in cats]
        assert f.bins['current'][:-2] == [cc[c] for c in cats]
        assert sum(f.bins['reference']) == sum(rc.values()) and sum(f.bins['current']) == sum(cc.values())
        assert f.bins['current'][-1] == sum(v for k, v in cc.items() if k not in rc)
        assert f.stats['reference']['missing'] == ref[name].null_count()
    assert len(s.feature('cat').bins['categories']) == 10 and s.feature('cat').bins['other_categories'] == 16
    assert [k for k, _ in s.feature('city').bins['unseen_top']] == sorted(['lima', 'kyiv'], key=lambda c: -cur['city'].eq(c).sum())


def test_severity_order_on_benchmark():
    ref, cur, drifted = drift_benchmark(4000, shift=0.3, moved=0.2, seed=3)
    s = DriftSummary.from_frames(ref, cur)
    assert s.drift_detected and set(s.drifted) == set(drifted)
    flags = [f.drift for f in s.features]
    assert flags == sorted(flags, reverse=True)  # drifted first
    for group in (True, False):
        ratios = [f.ratio for f in s.features if f.drift == group]
        assert ratios == sorted(ratios, reverse=True)


def test_untested_column_sorts_last_and_renders(tmp_path):
    ref = pl.DataFrame({'a': np.arange(100.0), 'b': np.arange(100.0)})
    cur = pl.DataFrame({'a': np.arange(50.0) + 30, 'b': pl.Series([None] * 50, dtype=pl.Float64)})
    s = DriftSummary.from_frames(ref, cur)
    assert s.names[-1] == 'b' and s.feature('b').ratio is None
    p = drift_report(s, tmp_path / 'r.html')
    assert 'not tested' in p.read_text()


def test_summary_keeps_no_rows():
    small = DriftSummary.from_frames(*drift_benchmark(2_000, seed=1)[:2])
    large = DriftSummary.from_frames(*drift_benchmark(40_000, seed=1)[:2])
    a, b = len(small.to_json()), len(large.to_json())
    assert b < 1.3 * a, (a, b)  # 20x the rows, about the same size: counts and quantiles only


def test_json_twin_round_trip_and_versions(tmp_path, messy):
    *_, s = messy
    p = drift_report(s, tmp_path / 'out' / 'drift.html')
    twin = p.with_suffix('.json')
    data = json.loads(twin.read_text())
    assert data['schema_version'] == SUMMARY_SCHEMA_VERSION == 2 and data['kind'] == 'mlwork.drift_summary'
    assert (data['alarm'], data['decision'], data['material']) == (s.alarm, s.decision, s.material)
    assert [f['outcome'] for f in data['features']] == [f.outcome for f in s.features]
    assert [f['name'] for f in data['features']] == s.names
    assert DriftSummary.from_json(twin).to_dict() == s.to_dict()
    assert 'NaN' not in twin.read_text() and 'Infinity' not in twin.read_text()
    with pytest.raises(DataError, match='schema_version 3 cannot be read.*upgrade mlwork'):
        DriftSummary.from_dict({**data, 'schema_version': 3})
    with pytest.raises(DataError, match='schema_version 1 cannot be read.*write the summary again'):
        DriftSummary.from_dict({**data, 'schema_version': 1})
    with pytest.raises(DataError, match='not valid JSON'):
        DriftSummary.from_json('{"kind": ')
    del data['features'][0]['bins']
    with pytest.raises(DataError, match='missing a field'):
        DriftSummary.from_dict(data)


def test_report_write_is_atomic(tmp_path, messy, monkeypatch):
    ref, cur, res, s = messy
    p = drift_report(s, tmp_path / 'd.html')
    before = (p.read_bytes(), p.with_suffix('.json').read_bytes())
    import mlwork.drift.report as dr
    def boom(*a, **k):
        raise RuntimeError('render failed')
    monkeypatch.setattr(dr, 'build_drift_report', boom)
    with pytest.raises(RuntimeError):
        drift_report(s, p)
    assert (p.read_bytes(), p.with_suffix('.json').read_bytes()) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ['d.html', 'd.json']  # no temporary files left


def test_bad_inputs(tmp_path, messy):
    ref, cur, res, s = messy
    with pytest.raises(DataError, match=r'column `x` must be numeric \(or numbers stored as text\) in current, as in the drift result \(found Boolean\)'):
        DriftSummary.from_frames(ref, cur.with_columns(pl.col('x').is_nan()), res)
    with pytest.raises(InvalidParameter, match="'result' parameter of DriftSummary.from_frames must be a DriftResult"):
        DriftSummary.from_frames(ref, cur, {'columns': []})
    with pytest.raises(InvalidParameter, match='cannot be given with a DriftSummary'):
        drift_report(s, tmp_path / 'a.html', reference=ref)
    with pytest.raises(InvalidParameter, match='must be a DriftSummary or a DriftResult'):
        drift_report('nope', tmp_path / 'a.html')
    assert not list(tmp_path.iterdir())


def test_over_time_rows_mode_and_time_mode(tmp_path):
    ref = generate('credit', n_rows=1200, seed=1).frame
    cur = generate('credit', n_rows=1200, seed=2, drift=Drift(('income',), 1.0, start='2024-07-01')).frame
    feats = ['income', 'age', 'loan_purpose']
    res = DriftDetector().fit(ref.select(feats)).score(cur.select(feats))
    by_rows = drift_over_time(ref, cur, columns=feats, rows=300)
    s = DriftSummary.from_frames(ref, cur, res, over_time=by_rows)
    assert len(s.over_time['labels']) == 4 and s.over_time['mode'] == 'rows'
    inc = s.feature('income').over_time
    assert inc['outcome'][-1] == 'material' and inc['outcome'][0] == 'no evidence'  # time-ordered: the drift starts in the second half
    monthly = drift_over_time(ref, cur, columns=feats, every='1mo', min_rows=150)  # ~100 rows a month: all skipped
    s2 = DriftSummary.from_frames(ref, cur, res, over_time=monthly)
    assert all(v is None for v in s2.feature('income').over_time['effect_value'])
    doc = drift_report(s2, tmp_path / 'skipped.html').read_text()
    assert 'Drift over time' in doc and '0 of 12 windows scored' in doc


# --- a real browser ---------------------------------------------------------------------------------

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    assert CHROMIUM, ('chromium is not installed: `apt-get install -y chromium` (the browser tests of the '
                      'standalone report need it; they are not skipped on purpose)')
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
           '--disable-extensions', '--allow-file-access-from-files', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def credit_report(tmp_path_factory):
    d = tmp_path_factory.mktemp('browser')
    ref = generate('credit', n_rows=1000, seed=1).frame
    cur = generate('credit', n_rows=1000, seed=2, drift=[Drift(('income',), 0.8, start='2024-07-01'),
                                                         Drift(('loan_purpose',), 0.3, start='2024-07-01')]).frame
    feats = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount',
             'loan_purpose', 'employment', 'region']
    res = DriftDetector().fit(ref.select(feats)).score(cur.select(feats))
    wd = drift_over_time(ref, cur, columns=feats, every='1mo')
    p = drift_report(res, d / 'credit.html', reference=ref, current=cur, over_time=wd)
    return p, feats


def test_browser_dump_dom(credit_report):
    p, feats = credit_report
    out = _chromium('--dump-dom', p.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    for name in feats:
        assert f'<b>{name}</b>' in dom, name
    assert dom.count('<svg') >= 2 * len(feats)  # distributions + small multiples
    assert '<script' not in dom


def _last_ink_row(png: Path) -> tuple[int, float]:
    from PIL import Image
    img = np.asarray(Image.open(png).convert('RGB')).astype(int)
    ink = (np.abs(img - 255).sum(axis=2) > 30)
    rows = np.nonzero(ink.any(axis=1))[0]
    return (int(rows.max()) if len(rows) else -1), float(ink.mean())


def test_browser_screenshot_and_css_filters(credit_report, tmp_path):
    p, feats = credit_report
    shots = {}
    doc = p.read_text()
    variants = {'all': doc,  # the CSS-only filter: the "material" radio checked hides the other sections
                'drifted': doc.replace('id="dd-all" checked', 'id="dd-all"').replace('id="dd-material"', 'id="dd-material" checked')}
    assert variants['drifted'] != doc
    for key, text in variants.items():
        html_path = tmp_path / f'{key}.html'
        html_path.write_text(text)
        png = tmp_path / f'{key}.png'
        out = _chromium(f'--screenshot={png}', '--window-size=1200,5000', html_path.as_uri())
        assert png.exists() and png.stat().st_size > 10_000, out.stderr[-2000:]
        shots[key] = _last_ink_row(png)
    last_all, ink_all = shots['all']
    assert ink_all > 0.02, 'the screenshot is (nearly) blank'
    from PIL import Image
    img = np.asarray(Image.open(tmp_path / 'all.png').convert('RGB')).astype(int)
    blue = (np.abs(img - np.array([0x09, 0x69, 0xda])).sum(axis=2) < 60) | (np.abs(img - np.array([0x9c, 0xc3, 0xf0])).sum(axis=2) < 40)
    assert blue.sum() > 500, 'no reference bars drawn'
    assert shots['drifted'][0] < last_all - 100, shots  # seven collapsed sections fewer: the page is shorter


def test_summary_from_sorted_values_equals_summary_from_frames():
    "A fitted detector's sorted reference and `score(keep_sorted=True)`'s sorted current give the same summary."
    rng = np.random.default_rng(5)
    n = 4_000
    ref = pl.DataFrame({'x': rng.normal(size=n), 'k': rng.integers(0, 7, n), 'r': np.round(rng.normal(size=n), 1),
                        'c': rng.choice(['a', 'b', 'c'], n)})
    cur = pl.DataFrame({'x': np.r_[rng.normal(0.3, 1, n - 3), [np.nan, np.inf, -np.inf]], 'k': rng.integers(0, 9, n),
                        'r': np.round(rng.normal(size=n), 1), 'c': rng.choice(['a', 'b', 'd'], n)})
    det = DriftDetector().fit(ref)
    res = det.score(cur, keep_sorted=True)
    assert set(det.sorted_current_) == {'x', 'k', 'r'}
    slow = DriftSummary.from_frames(ref, cur, res)
    fast = DriftSummary.from_frames(ref, cur, res, detector=det)
    for a, b in zip(slow.features, fast.features):
        assert (a.name, a.kind, a.result) == (b.name, b.kind, b.result)
        assert a.bins == b.bins, a.name                       # counts per bin: exactly equal
        if a.kind != 'numeric':
            assert a.stats == b.stats
            continue
        for side in ('reference', 'current'):
            for k, v in a.stats[side].items():
                w = b.stats[side][k]
                assert (v is None) == (w is None) and (v is None or abs(v - w) <= 1e-12 * max(1.0, abs(v))), (a.name, side, k, v, w)
    det.score(cur)                          # without keep_sorted nothing is kept
    assert det.sorted_current_ == {}
