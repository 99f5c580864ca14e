"""The three per-column outcomes (material, changed, no evidence) and the dataset decision with its rule, shown the same
way by every surface: `mlwork drift` (text, `--json`, exit code), the standalone report and its JSON twin, `DriftPanel`,
windowed drift in the report, and drift from stored profiles. Decisions are checked against scipy (KS, BH, Wasserstein)."""
from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.cli.main import main
from mlwork.data.profile import profile_frame
from mlwork.drift.report import DriftSummary, decision_sentence, drift_report, effect_sentence
from mlwork.drift.univariate import DriftDetector
from mlwork.ui.panels import DriftPanel

N = 50_000
WANT = {'big': 'material', 'small': 'changed', 'same': 'no evidence', 'mix': 'changed', 'cat': 'no evidence'}


@pytest.fixture(scope='module')
def frames(tmp_path_factory):
    "50,000 rows a side: a 0.5 sd shift (material), a 0.05 sd shift (changed, below the 0.1 sd bar), no change, and a categorical mixed 85/15."
    r = np.random.default_rng(11)
    p, q = np.array([0.5, 0.3, 0.15, 0.05]), np.array([0.4, 0.3, 0.2, 0.1])
    cats = np.array(['a', 'b', 'c', 'd'])
    def frame(part: int) -> pl.DataFrame:
        mix = 0.85 * p + 0.15 * q if part else p
        return pl.DataFrame({'big': r.normal(0.5 * part, 1, N), 'small': r.normal(0.05 * part, 1, N), 'same': r.exponential(2, N),
                             'mix': cats[r.choice(4, N, p=mix)], 'cat': cats[r.choice(4, N, p=p)]})
    ref, cur = frame(0), frame(1)
    d = tmp_path_factory.mktemp('outcomes')
    ref.write_parquet(d / 'ref.parquet'); cur.write_parquet(d / 'cur.parquet')
    profile_frame(ref).save(d / 'ref.bin'); profile_frame(cur).save(d / 'cur.bin')
    return ref, cur, d


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_outcomes_agree_with_scipy(frames):
    ref, cur, _ = frames
    res = DriftDetector().fit(ref).score(cur)
    p = []
    for c in res.columns['column']:
        if ref.schema[c].is_numeric():
            p.append(stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue)
        else:
            a, b = dict(ref[c].value_counts().iter_rows()), dict(cur[c].value_counts().iter_rows())
            p.append(stats.chi2_contingency(np.array([[a[k] for k in sorted(a)], [b.get(k, 0) for k in sorted(a)]]),
                                            correction=False).pvalue)
    changed = stats.false_discovery_control(np.array(p), method='bh') < 0.05
    rows = {r['column']: r for r in res.to_dict()['columns']}
    assert [rows[c]['drift'] for c in res.columns['column']] == changed.tolist()
    assert {c: r['outcome'] for c, r in rows.items()} == WANT
    for c in ('big', 'small', 'same'):
        w = stats.wasserstein_distance(ref[c].to_numpy(), cur[c].to_numpy()) / ref[c].std(ddof=0)
        r = rows[c]
        assert r['effect_value'] == pytest.approx(w, rel=1e-6)
        assert r['effect_low'] <= w <= r['effect_high'] and (r['bar'], r['bar_source']) == (0.1, 'default')
        assert r['material'] == (r['drift'] and r['effect_low'] > r['bar'])


def test_cli_text_json_and_exit_code(frames):
    _, _, d = frames
    code, out, err = run('drift', str(d / 'ref.parquet'), str(d / 'cur.parquet'))
    assert code == 3, err  # rule 'changed': three columns changed
    lines = out.splitlines()
    assert lines[0].endswith(decision_sentence(json.loads(run('drift', str(d / 'ref.parquet'), str(d / 'cur.parquet'), '--json')[1])['decision']))
    assert "Dataset alarm RAISED — rule 'changed'" in lines[0] and 'columns tested 5, changed 3, material 1' in lines[0]
    assert lines[1] == '  3 of 5 columns changed: 1 material (big), 2 below the bar (small, mix); 2 no evidence of change'
    for c, o in WANT.items():
        assert any(re.match(rf'  {o} +{c} ', line) for line in lines), (c, o, out)
    assert 'no drift' not in out.lower()
    assert re.search(r'  changed +small +ks +p_adj=\S+  moved by 0\.0\d+ sd \(0\.0\d+–0\.0\d+\), below the default bar of 0\.1 sd', out), out

    code, js, _ = run('drift', str(d / 'ref.parquet'), str(d / 'cur.parquet'), '--json')
    body = json.loads(js)
    assert code == 3 and body['alarm'] is True and body['drift_detected'] is True
    assert set(body['decision']) >= {'rule', 'alarm', 'false_alarm_rate', 'statement', 'inputs'}
    assert (body['decision']['rule'], body['decision']['false_alarm_rate']) == ('changed', 0.05)
    assert body['material'] == ['big'] and sorted(body['drifted']) == ['big', 'mix', 'small']
    for r in body['columns']:
        assert r['outcome'] == WANT[r['column']] and r['bar_source'] == 'default'
        assert r['effect_low'] <= r['effect_value'] <= r['effect_high'] or r['effect_low'] > r['effect_value'] == 0.0

    # the same changes, another rule: no column clears a 1 sd / 0.5 TV bar, so rule 'material' raises no alarm: exit 0
    code, js, _ = run('drift', str(d / 'ref.parquet'), str(d / 'cur.parquet'), '--json', '--alarm', 'material',
                      '--bar-numeric', '1', '--bar-categorical', '0.5')
    body = json.loads(js)
    assert code == 0 and body['alarm'] is False and body['material'] == [] and sorted(body['drifted']) == ['big', 'mix', 'small']
    assert {r['bar_source'] for r in body['columns']} == {'user'}
    code, out, _ = run('drift', str(d / 'ref.parquet'), str(d / 'cur.parquet'), '--alarm', 'material', '--bar', 'big=1')
    assert code == 0 and 'Dataset alarm not raised' in out and 'below the 1 sd you set' in out


def test_report_twin_and_panel(frames, tmp_path):
    ref, cur, d = frames
    det = DriftDetector()
    res = det.fit(ref).score(cur, keep_sorted=True)
    path = drift_report(res, tmp_path / 'r.html', reference=ref, current=cur, detector=det)
    doc, twin = path.read_text(), json.loads(path.with_suffix('.json').read_text())
    assert 'no drift' not in doc.lower() and 'Dataset alarm RAISED' in doc and res.decision['statement'].replace("'", '&#x27;') in doc
    for o, n in (('material', 1), ('changed', 2), ('no evidence', 2)):
        assert f'>{o} ({n})</label>' in doc
        assert doc.count(f'<span class="badge {dict(material="bad", changed="warn")[o] if o != "no evidence" else "ok"}">{o}</span>') >= n
    s = DriftSummary.from_dict(twin)
    assert (twin['alarm'], twin['decision'], twin['material']) == (res.alarm, res.decision, res.material)
    assert {f.name: f.outcome for f in s.features} == WANT
    small = s.feature('small')
    assert effect_sentence(small.result) in doc
    panel = DriftPanel(s)
    assert panel.visible[0] == 'big' and 'Dataset alarm RAISED' in panel.header.value
    assert [lbl.split()[0] for lbl, _ in panel.features.options] == ['●', '◐', '◐', '○', '○']
    assert sorted(panel.filter(outcome='changed').visible) == ['mix', 'small']
    assert 'no drift' not in panel.select('same').detail.value.lower()


def test_windowed_drift_in_the_report_shows_outcomes_per_window(frames):
    ref, cur, _ = frames
    from mlwork.drift.windows import drift_over_time
    wd = drift_over_time(ref.head(20_000), cur.head(20_000), columns=['big', 'same'], rows=5_000)
    res = DriftDetector().fit(ref.head(20_000).select('big', 'same')).score(cur.head(20_000).select('big', 'same'))
    s = DriftSummary.from_frames(ref.head(20_000), cur.head(20_000), res, over_time=wd)
    assert s.feature('big').over_time['outcome'] == ['material'] * 4
    assert set(s.feature('same').over_time['outcome']) <= {'no evidence', 'changed'}


def test_profiles_give_the_same_outcomes_from_the_cli(frames):
    _, _, d = frames
    code, js, err = run('drift', str(d / 'ref.bin'), str(d / 'cur.bin'), '--json')
    body = json.loads(js)
    assert code == 3, err
    got = {r['column']: r['outcome'] for r in body['columns']}
    assert got['big'] == 'material' and got['same'] == 'no evidence' and got['cat'] == 'no evidence'
    assert got['mix'] == 'changed'  # few categories: exact counts, exactly the raw answer
    assert got['small'] in ('changed', 'no evidence')  # conservative: a sketched 0.05 sd shift may stay below the KS bound
    assert body['decision']['rule'] == 'changed' and body['alarm'] is True
    code, out, err = run('drift', str(d / 'ref.bin'), str(d / 'cur.bin'), '--reference-bars')
    assert code == 2 and 'a profile does not keep' in err
