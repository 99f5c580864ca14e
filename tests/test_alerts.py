"Change detectors against independent oracles, alert rules files, incidents (de-duplication, resolution, cool-down)."
from __future__ import annotations

import datetime as dt
import json
import math
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlwork.alerts.detectors import Cusum, PageHinkley, average_run_length
from mlwork.alerts.rules import AlertRules, IncidentStore, evaluate_rules
from mlwork.core import ConfigError, NotFound

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


# --- detectors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode,alpha', [('both', 1.0), ('up', 1.0), ('down', 1.0), ('both', 0.999)])
def test_page_hinkley_matches_river(mode, alpha):
    drift = pytest.importorskip('river.drift')
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(0, 1, 300), rng.normal(1.5, 1, 300), rng.normal(-1, 1, 300), rng.normal(0, 1, 300)]
    ref = drift.PageHinkley(min_instances=20, delta=0.05, threshold=15, alpha=alpha, mode=mode)
    expected = []
    for i, v in enumerate(x):
        ref.update(float(v))
        if ref.drift_detected:
            expected.append(i)
    got = PageHinkley(delta=0.05, threshold=15, direction=mode, min_samples=20, alpha=alpha).run(x).alarms
    assert len(expected) >= 2
    assert list(got) == expected


def _cusum_loop(x, mean, sd, k, h):
    "Tabular CUSUM written as the textbook loop (Montgomery 9.1): C+ and C-, restart both after an alarm."
    c_plus = c_minus = 0.0
    alarms = []
    for i, v in enumerate(x):
        c_plus = max(0.0, v - (mean + k * sd) + c_plus)
        c_minus = max(0.0, (mean - k * sd) - v + c_minus)
        if c_plus > h * sd or c_minus > h * sd:
            alarms.append(i)
            c_plus = c_minus = 0.0
    return alarms


def test_cusum_matches_textbook_loop():
    rng = np.random.default_rng(5)
    x = 10 + 2 * np.r_[rng.normal(0, 1, 200), rng.normal(0.8, 1, 200), rng.normal(-0.8, 1, 200)]
    got = Cusum(k=0.5, h=4).run(x, reference=(10.0, 2.0)).alarms
    assert len(got) >= 5
    assert list(got) == _cusum_loop(x, 10.0, 2.0, 0.5, 4)
    est = Cusum(k=0.5, h=4, reference_points=50).run(x)  # reference estimated from the first 50 values
    m, s = x[:50].mean(), x[:50].std(ddof=1)
    assert list(est.alarms) == [i + 50 for i in _cusum_loop(x[50:], m, s, 0.5, 4)]


def _siegmund_two_sided(k, h, shift):
    "Siegmund's approximation of the CUSUM ARL; two sides combined as 1/ARL = 1/ARL+ + 1/ARL-."
    b = h + 1.166
    def one(d):
        return b * b if d == 0 else (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)
    return 1 / (1 / one(shift - k) + 1 / one(-shift - k))


@pytest.mark.parametrize('h,shift,max_points', [(4, 0.0, 3000), (5, 0.0, 4000), (5, 1.0, 200)])
def test_cusum_arl_against_siegmund(h, shift, max_points):
    a = average_run_length(Cusum(k=0.5, h=h), shift, runs=1500, max_points=max_points, seed=11)
    oracle = _siegmund_two_sided(0.5, h, shift)  # h=4: 169, h=5: 469, h=5 at 1 sd: 10.3
    assert a['censored'] < 0.01
    assert abs(a['arl'] - oracle) < 4 * a['se'] + 0.04 * oracle, (a, oracle)


def test_false_alarm_rate_under_null_in_documented_range():
    # documented: two-sided CUSUM k=0.5 h=5 has an in-control ARL of about 465-470 points (the notebook's table)
    rng = np.random.default_rng(21)
    det = Cusum(k=0.5, h=5)
    alarms = sum(len(det.run(rng.normal(0.8, 0.01, 400), reference=(0.8, 0.01)).alarms) for _ in range(150))
    rate = alarms / (150 * 400)
    assert 1 / 650 < rate < 1 / 330, rate
    ph = PageHinkley(delta=0.5, threshold=5, min_samples=10)  # documented in-control ARL ~490
    a = average_run_length(ph, 0.0, runs=600, max_points=3000, seed=4)
    assert 400 < a['arl'] < 600, a


def test_slow_drift_caught_before_a_fixed_threshold():
    # AUC 0.80 (sd 0.005) for 30 windows, then -0.00025 per window (0.05 sd): the mean reaches a floor 3 sd down
    # (0.785, a one-window false-alarm rate of 1/741) only 60 windows after the drift began. A one-sided CUSUM
    # (k=0.5, h=5: in-control ARL ~1000, fewer false alarms than the floor) alarms long before the floor is crossed.
    leads, delays = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = 0.80 + rng.normal(0, 0.005, 300) - np.r_[np.zeros(30), 0.00025 * np.arange(1, 271)]
        crossed = int(np.flatnonzero(x < 0.785)[0])
        first = Cusum(k=0.5, h=5, direction='down').run(x, reference=(0.80, 0.005)).first_alarm
        assert first is not None
        leads.append(crossed - first if first >= 30 else -1)  # an alarm before the drift began counts as a miss
        delays.append(first - 30)
    assert sum(lead > 0 for lead in leads) >= 26, leads  # measured: 31 of 40
    assert np.median(leads) >= 6, leads  # measured: 12 windows earlier
    assert np.median(delays) < 45, delays  # the mean alone crosses the floor at 60


# --- rules files ----------------------------------------------------------------------------------------------

GOOD = """\
notifiers:
  log: {type: file, path: alerts.jsonl}
  hook: {type: webhook, url: 'http://127.0.0.1:9/hook', retries: 2, backoff: 0.01}
rules:
  - name: auc-floor
    metric: roc_auc
    kind: performance
    comparator: '<'
    threshold: 0.75
    severity: critical
    cooldown: 2h
    notify: [log, hook]
  - name: psi-any-feature
    metric: psi
    comparator: '>='
    threshold: 0.2
    window: 2
    notify: [log]
  - name: auc-decline
    metric: roc_auc
    comparator: '<'
    threshold: {detector: cusum, k: 0.5, h: 4, reference_points: 8}
"""


def _load(tmp_path, text, **kw):
    p = tmp_path / 'alerts.yaml'
    p.write_text(text)
    return AlertRules.load(p, **kw)


def test_rules_file_loads(tmp_path):
    rules = _load(tmp_path, GOOD)
    assert [r.name for r in rules.rules] == ['auc-floor', 'psi-any-feature', 'auc-decline']
    assert [r.line for r in rules.rules] == [5, 13, 19]
    assert rules.rules[0].notify == ('log', 'hook') and rules.rules[0].cooldown_seconds == 7200
    json.dumps(rules.to_dict())
    assert 'auc-floor [critical]: roc_auc < 0.75' in str(rules)


@pytest.mark.parametrize('old,new,line,words', [
    ("comparator: '<'\n    threshold: 0.75", "comparator: '=<'\n    threshold: 0.75", 8, "comparator must be one of"),
    ("comparator: '>='", "comparator: 'gte'", 15, "comparator must be one of"),
    ("    window: 2\n", "    widnow: 2\n", 17, "unknown key 'widnow'"),
    ("    window: 2\n", "    window: two\n", 17, 'window must be a number of windows'),
    ("cooldown: 2h", "cooldown: soon", 11, 'cooldown must be a duration'),
    ("severity: critical", "severity: urgent", 10, 'severity must be one of'),
    ("notify: [log, hook]", "notify: [log, pager]", 12, 'notify must be names of notifiers'),
    ("k: 0.5, h: 4", "k: 0.5, hh: 4", 22, "unknown cusum parameter(s) 'hh'"),
    ("detector: cusum", "detector: ewma", 22, "detector must be 'cusum' or 'page_hinkley'"),
    ("threshold: 0.2", "threshold: high", 16, 'threshold must be a number'),
    ("  - name: psi-any-feature", "  - name: auc-floor", 13, "a second rule named 'auc-floor'"),
    ("    metric: psi\n", "", 13, "rule 'psi-any-feature' has no metric"),
    ("{type: file, path: alerts.jsonl}", "{type: sms, path: alerts.jsonl}", 2, "notifier 'log' needs a type"),
    ("rules:\n  - name: auc-floor", "rules:\n  - name: [auc-floor", 6, 'not valid YAML'),
])
def test_rules_file_errors_name_the_line(tmp_path, old, new, line, words):
    assert old in GOOD
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, GOOD.replace(old, new, 1))
    msg = str(e.value)
    assert f'alerts.yaml line {line}:' in msg and words in msg, msg


def test_unknown_metric_is_checked_against_known_metrics(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts.yaml line 13: rule 'psi-any-feature' watches an unknown metric 'psi'"):
        _load(tmp_path, GOOD, known_metrics=['roc_auc', 'psi_score'])
    _load(tmp_path, GOOD, known_metrics=['roc_auc', 'psi'])


def test_secrets_only_by_reference(tmp_path):
    mail = "  mail: {type: email, host: 127.0.0.1, port: 25, from: a@b.c, to: [d@e.f], password: PASSWORD}\n"
    with pytest.raises(ConfigError, match='line 4: notifier .mail.: password must be a reference') as e:
        _load(tmp_path, GOOD.replace('rules:\n', mail + 'rules:\n'))
    assert 'PASSWORD' not in str(e.value).split('found')[-1]
    _load(tmp_path, GOOD.replace('rules:\n', mail.replace('PASSWORD', 'env:SMTP_PASSWORD') + 'rules:\n'))


def test_missing_and_empty_rules_file(tmp_path):
    with pytest.raises(NotFound):
        AlertRules.load(tmp_path / 'nope.yaml')
    assert _load(tmp_path, '').rules == ()


# --- evaluation and incidents ---------------------------------------------------------------------------------

def _frame(values, *, metric='roc_auc', version=1, arm='champion', group=None, start=0, kind='performance', computed=0):
    ends = [T0 + dt.timedelta(days=start + i + 1) for i in range(len(values))]
    return pl.DataFrame({
        'run_id': 'r', 'model': 'm', 'version': version, 'arm': arm,
        'window_start': [e - dt.timedelta(days=1) for e in ends], 'window_end': ends,
        'window': [f'{e:%Y-%m-%d}' for e in ends], 'kind': kind, 'metric': metric, 'group': group,
        'value': [float(v) for v in values], 'lower': None, 'upper': None, 'n': 500,
        'computed_at': T0 + dt.timedelta(days=400 + computed)},
        schema_overrides={'group': pl.Utf8, 'lower': pl.Float64, 'upper': pl.Float64,
                          'window_start': pl.Datetime('us', 'UTC'), 'window_end': pl.Datetime('us', 'UTC'),
                          'computed_at': pl.Datetime('us', 'UTC')})


def _only(rules, *names):
    return AlertRules(tuple(r for r in rules.rules if r.name in names), rules.notifiers, rules.source)


def test_one_incident_per_rule_until_resolved_then_cooldown(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor')
    store = IncidentStore(tmp_path / 'ws', 'm')
    auc = [0.80, 0.70, 0.69, 0.68, 0.80, 0.70, 0.70]
    hours = [24, 48, 72, 96, 120, 121, 123]  # evaluation times; the fall at 121 h is inside the 2 h cool-down
    seen = []
    for i, h in enumerate(hours):
        ev = evaluate_rules(rules, _frame(auc[:i + 1]), incidents=store, now=T0 + dt.timedelta(hours=h))
        seen.append([e.status for e in ev])
    assert seen == [[], ['firing'], [], [], ['resolved'], [], ['firing']]
    incs = store.list()
    assert [i.status for i in incs] == ['resolved', 'open'] and len(store.list(status='open')) == 1
    first = incs[0]
    assert first.value == 0.70 and first.last_value == 0.68 and first.resolved_value == 0.80
    data = json.loads(store.path.read_text())
    assert data['format'] == 1 and len(data['incidents']) == 2
    assert store.path == tmp_path / 'ws' / 'monitor' / 'm' / 'incidents.json'


def test_events_carry_what_notifiers_need(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor')
    store = IncidentStore(tmp_path, 'm')
    (fire,) = evaluate_rules(rules, _frame([0.8, 0.7]), incidents=store, now=T0 + dt.timedelta(days=2))
    assert (fire.status, fire.metric, fire.value, fire.threshold, fire.version, fire.window, fire.notify) == \
        ('firing', 'roc_auc', 0.7, 0.75, 1, '2026-01-03', ('log', 'hook'))
    assert fire.message.startswith('[critical] auc-floor firing: roc_auc = 0.7, < 0.75 in window 2026-01-03')
    (res,) = evaluate_rules(rules, _frame([0.8, 0.7, 0.9]), incidents=store, now=T0 + dt.timedelta(days=3))
    assert res.status == 'resolved' and res.incident_id == fire.incident_id
    assert 'no longer < 0.75' in res.message and 'open since' in res.message
    json.dumps(fire.to_dict())


def test_versions_and_groups_are_separate_series(tmp_path):
    rules = _load(tmp_path, GOOD)
    store = IncidentStore(tmp_path, 'm')
    # version 2 (challenger) breaches, version 1 does not: the incident names version 2; the mean is never mixed
    both = pl.concat([_frame([0.80, 0.80]), _frame([0.80, 0.70], version=2, arm='challenger')])
    (ev,) = evaluate_rules(_only(rules, 'auc-floor'), both, incidents=store, now=T0 + dt.timedelta(days=2))
    assert (ev.version, ev.arm) == (2, 'challenger') and '1 of 2 series breach' in ev.message
    # drift per feature: one feature over the bar over the 2-window mean fires; others are fine
    psi = pl.concat([_frame([0.05, 0.05], metric='psi', kind='drift', group='age'),
                     _frame([0.15, 0.30], metric='psi', kind='drift', group='income')])
    (ev,) = evaluate_rules(_only(rules, 'psi-any-feature'), psi, incidents=store, now=T0 + dt.timedelta(days=2))
    assert ev.group == 'income' and ev.value == pytest.approx(0.225)


def test_recomputed_window_uses_the_latest_computation(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor')
    old, new = _frame([0.8, 0.7]), _frame([0.8, 0.78], computed=1)
    ev = evaluate_rules(rules, pl.concat([old, new]), incidents=IncidentStore(tmp_path, 'm'), now=T0 + dt.timedelta(days=2))
    assert ev == []


def test_detector_rule_fires_before_the_floor(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor', 'auc-decline')
    store = IncidentStore(tmp_path, 'm')
    rng = np.random.default_rng(2)
    auc = 0.80 + rng.normal(0, 0.004, 60) - np.r_[np.zeros(15), 0.0012 * np.arange(1, 46)]
    fired: dict[str, int] = {}
    for n in range(1, 61):
        for e in evaluate_rules(rules, _frame(auc[:n]), incidents=store, now=T0 + dt.timedelta(days=n)):
            if e.status == 'firing':
                fired.setdefault(e.rule, n)
    assert fired['auc-decline'] < fired.get('auc-floor', 99), fired


def test_no_current_data_leaves_incidents_alone(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor')
    store = IncidentStore(tmp_path, 'm')
    evaluate_rules(rules, _frame([0.7]), incidents=store, now=T0)
    assert evaluate_rules(rules, _frame([0.9], metric='accuracy'), incidents=store, now=T0) == []
    assert len(store.list(status='open')) == 1


def test_ack_and_concurrent_writers(tmp_path):
    rules = _only(_load(tmp_path, GOOD), 'auc-floor')
    store = IncidentStore(tmp_path, 'm')
    (ev,) = evaluate_rules(rules, _frame([0.7]), incidents=store, now=T0)
    def acker(who):
        for i in range(15):
            IncidentStore(tmp_path, 'm').ack(ev.incident_id, by=who, why=f'look {i}')
    threads = [threading.Thread(target=acker, args=(w,)) for w in ('ana', 'bo', 'cy')]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acks = store.get(ev.incident_id).acks
    assert len(acks) == 45 and {a['by'] for a in acks} == {'ana', 'bo', 'cy'}
    with pytest.raises(NotFound, match='open: inc-'):
        store.ack('inc-nope', by='ana')


def test_damaged_incident_file_is_a_clear_error(tmp_path):
    store = IncidentStore(tmp_path, 'm')
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"incidents": [')
    with pytest.raises(ConfigError, match='incident file .* is damaged'):
        store.list()


def test_span_window_and_given_reference(tmp_path):
    text = """\
rules:
  - {name: span, metric: roc_auc, comparator: '<', threshold: 0.75, window: 2d}
  - {name: rel, metric: roc_auc, comparator: '<', threshold: {relative_to_reference: 0.9}, reference: 0.85}
"""
    rules = _load(tmp_path, text)
    store = IncidentStore(tmp_path, 'm')
    # last two daily windows 0.76 and 0.72 (n 500 each): mean 0.74 < 0.75; the window before (0.60) is outside 2d
    ev = evaluate_rules(rules, _frame([0.60, 0.76, 0.72]), incidents=store, now=T0)
    by = {e.rule: e for e in ev}
    assert by['span'].value == pytest.approx(0.74) and by['span'].window == '2026-01-03 .. 2026-01-04'
    assert by['rel'].threshold == pytest.approx(0.765) and by['rel'].value == pytest.approx(0.72)
