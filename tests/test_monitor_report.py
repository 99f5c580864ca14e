"""The monitoring report (mlwork.monitor.report): every metric of a realistic metric table has its figure, the plotted
values are the table's, thresholds and incidents are drawn, the drift heat table and the drill-down agree with the table,
and the standalone file renders in headless chromium with every http(s) request sent to a dead proxy."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from mlwork.core import DataError
from mlwork.monitor.cost import Prices, cost_rows
from mlwork.monitor.metrics import METRIC_COLUMNS, metric_frame
from mlwork.monitor.report import drifted_features, incident_frame, metric_figure, monitor_report

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
FEATURES = ('AGEP', 'SCHL', 'MAR', 'WKHP', 'COW')


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    assert CHROMIUM, 'chromium is not installed: `apt-get install -y chromium` (the browser test of the report needs it)'
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
           '--disable-extensions', '--allow-file-access-from-files', '--proxy-server=http://127.0.0.1:9',
           '--proxy-bypass-list=<-loopback>', '--virtual-time-budget=5000', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def history(seed: int = 0, days: int = 10) -> pl.DataFrame:
    "Ten daily windows: v3 champion throughout, v4 challenger from day 6; every kind of metric, WKHP drifting from day 4."
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        w = {'window_start': T0 + timedelta(days=d), 'window_end': T0 + timedelta(days=d + 1), 'window': f'{T0 + timedelta(days=d):%Y-%m-%d}'}
        for v, arm in ((3, 'champion'), (4, 'challenger')):
            if v == 4 and d < 6:
                continue
            at = {**w, 'version': v, 'arm': arm}
            auc = 0.82 - (0.015 * max(0, d - 4) if v == 3 else 0) + rng.normal(0, 0.003)
            rows += [{**at, 'kind': 'performance', 'metric': 'roc_auc', 'value': auc, 'lower': auc - 0.01, 'upper': auc + 0.01, 'n': 800},
                     {**at, 'kind': 'performance', 'metric': 'brier', 'value': 0.2 + rng.normal(0, 0.005), 'n': 800},
                     {**at, 'kind': 'estimated', 'metric': 'roc_auc', 'value': auc + 0.005, 'n': 1200},
                     {**at, 'kind': 'prediction_drift', 'metric': 'psi', 'value': 0.01 * d if v == 3 else 0.01, 'n': 2000}]
            for f in FEATURES:
                shift = 0.08 * max(0, d - 3) if (f == 'WKHP' and v == 3) else (0.03 * max(0, d - 6) if f == 'SCHL' and v == 3 else 0)
                psi = abs(rng.normal(0.01, 0.003)) + shift
                rows += [{**at, 'kind': 'drift', 'metric': 'psi', 'group': f, 'value': psi, 'n': 2000},
                         {**at, 'kind': 'drift', 'metric': 'p_value', 'group': f, 'value': float(np.exp(-200 * psi)), 'n': 2000}]
            for g in ('SEX=1', 'SEX=2'):
                rows.append({**at, 'kind': 'fairness', 'metric': 'selection_rate', 'group': g, 'value': 0.5 + rng.normal(0, 0.02), 'n': 1000})
            rows.append({**at, 'kind': 'attribution', 'metric': 'rank_correlation', 'value': 1 - 0.02 * d, 'n': 500})
            for q, lat in (('latency_p50_ms', 3.0), ('latency_p95_ms', 8.0), ('latency_p99_ms', 14.0)):
                rows.append({**at, 'kind': 'operational', 'metric': q, 'value': lat + rng.gamma(1, 0.3), 'n': 2000})
            rows += [{**at, 'kind': 'operational', 'metric': 'requests', 'value': 2000.0, 'n': 2000},
                     {**at, 'kind': 'operational', 'metric': 'rows_per_s', 'value': 2000 / 86400, 'n': 2000}]
    base = metric_frame(rows, run_id='mon-1', model='acs_employment', computed_at=T0 + timedelta(days=days))
    cost = [cost_rows('mon-1', 'acs_employment', 30.0 + d, 2000, Prices(cpu_hour=0.05), version=3, arm='champion',
                      window_start=T0 + timedelta(days=d), window_end=T0 + timedelta(days=d + 1), window=f'{T0 + timedelta(days=d):%Y-%m-%d}')
            for d in range(days)]
    return pl.concat([base, *cost])


@dataclasses.dataclass
class Incident:  # what an incident store might hand back: an object, not a dict
    id: str
    rule: str
    metric: str
    severity: str
    version: int | None
    opened_at: datetime
    resolved_at: datetime | None
    window: str | None = None


INCIDENTS = [Incident('7', 'auc_drop', 'roc_auc', 'critical', 3, T0 + timedelta(days=7, hours=2), None, '2026-03-08'),
             {'id': '8', 'rule': 'wkhp_psi', 'metric': 'psi', 'kind': 'drift', 'severity': 'warning', 'version': 3,
              'opened_at': (T0 + timedelta(days=5, hours=1)).isoformat(), 'resolved_at': (T0 + timedelta(days=6)).isoformat()}]


@pytest.fixture(scope='module')
def metrics() -> pl.DataFrame:
    m = history()
    assert m.schema == pl.Schema(METRIC_COLUMNS)
    return m


def test_every_metric_has_its_figure_and_the_incidents_are_there(metrics, tmp_path):
    rep = monitor_report(metrics, INCIDENTS, title='acs_employment monitoring', thresholds={'roc_auc': 0.76, 'latency_p99_ms': 20})
    doc = rep.to_html()
    pairs = metrics.select('kind', 'metric').unique().rows()
    assert len(pairs) == 17
    for kind, metric in pairs:
        assert len(re.findall(rf'<figure id="metric-{kind}-{metric}" data-metric="{kind}/{metric}"><svg', doc)) == 1, (kind, metric)
    assert 'auc_drop' in doc and 'wkhp_psi' in doc and 'critical' in doc and '2026-03-08' in doc
    assert 'thresholds 0.76' in doc and 'id="cost-beside-performance"' in doc
    assert doc.count('class="heat"') == 2                                   # one per version
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//|@import|<script', doc)
    path = rep.save(tmp_path / 'monitor.html')
    assert path.read_text() == doc or path.read_text().count('<figure') == doc.count('<figure')


def test_plotted_values_thresholds_and_incident_spans(metrics):
    inc = incident_frame(INCIDENTS)
    fig = metric_figure(metrics, 'roc_auc', kind='performance', thresholds=[0.76], incidents=inc)
    ax = fig.axes[0]
    want = metrics.filter(pl.col('kind') == 'performance', pl.col('metric') == 'roc_auc').sort('version', 'window_start')
    data = [ln for ln in ax.lines if ln.get_label().startswith('v')]
    assert [ln.get_label() for ln in data] == ['v3 · champion', 'v4 · challenger']
    assert np.concatenate([ln.get_ydata() for ln in data]).tolist() == want['value'].to_list()
    assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_label().startswith('threshold')] == [0.76]
    spans = ax.patches
    assert len(spans) == 1                              # the AUC incident, not the PSI one
    left = spans[0].get_x()    # axvspan draws a Rectangle in data coordinates (x) and axes coordinates (y)
    assert mdates.num2date(left) == T0 + timedelta(days=6)    # starts at its window, 2026-03-08
    plt.close(fig)
    for kind, n in (('drift', 1), ('prediction_drift', 0)):   # the PSI incident names its kind: not on prediction drift
        other = metric_figure(metrics, 'psi', kind=kind, incidents=inc)
        assert len(other.axes[0].patches) == n, kind
        plt.close(other)


def test_drill_down_and_heat_table_agree_with_the_table(metrics):
    inc = incident_frame(INCIDENTS).row(0, named=True)     # the PSI incident, opened inside 2026-03-07
    assert inc['rule'] == 'wkhp_psi'
    got = drifted_features(metrics, inc)
    want = (metrics.filter(pl.col('kind') == 'drift', pl.col('metric') == 'psi', pl.col('version') == 3, pl.col('window') == '2026-03-07')
            .sort('value', descending=True))
    assert got['feature'].to_list() == want['group'].to_list() and got['psi'].to_list() == want['value'].to_list()
    assert got['feature'][0] == 'WKHP' and set(got['window']) == {'2026-03-07'}
    html = monitor_report(metrics, INCIDENTS, title='t').to_html()
    heat = html[html.index('class="heat"'):]
    row = re.search(r'<td>WKHP</td>(.*?)</tr>', heat).group(1)
    cells = [float(c.replace(',', '')) for c in re.findall(r'>([-0-9.e,]+)</td>', row)]
    v3 = metrics.filter(pl.col('kind') == 'drift', pl.col('metric') == 'psi', pl.col('group') == 'WKHP', pl.col('version') == 3).sort('window_start')
    assert cells == pytest.approx(v3['value'].to_list(), rel=1e-3)       # shown with 4 significant digits


def test_bad_input(metrics):
    with pytest.raises(DataError, match="has no column 'window'"):
        monitor_report(metrics.drop('window'), title='x')
    with pytest.raises(DataError, match="incident 0 has no 'severity'"):
        monitor_report(metrics, [{'rule': 'r', 'metric': 'm', 'opened_at': T0, 'resolved_at': None, 'version': 1}], title='x')
    empty = monitor_report(metrics.clear(), title='nothing yet').to_html()
    assert 'The metric table is empty' in empty


def test_report_renders_offline_in_chromium(metrics, tmp_path):
    path = monitor_report(metrics, INCIDENTS, title='acs_employment monitoring', thresholds={'roc_auc': 0.76}).save(tmp_path / 'm.html')
    out = _chromium('--dump-dom', path.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    n = metrics.select('kind', 'metric').unique().height
    assert len(re.findall(r'<figure id="metric-[^"]+" data-metric="[^"]+"><svg', dom)) == n
    assert 'auc_drop' in dom and 'Cost beside performance' in dom
    shot = tmp_path / 'm.png'
    out = _chromium('--screenshot=' + str(shot), '--window-size=1100,3000', path.as_uri())
    assert out.returncode == 0 and shot.stat().st_size > 50_000       # drawn, not blank


def test_incidents_straight_from_the_alerts_incident_store(metrics, tmp_path):
    "The report and the drill-down take an `mlwork.alerts.rules.IncidentStore` (its `list()`) as they are."
    from mlwork.alerts.rules import Incident, IncidentStore
    store = IncidentStore(tmp_path, 'acs_employment')
    opened = (T0 + timedelta(days=12)).isoformat()      # the run that opened it executed after the traffic it measured
    inc = Incident(id='inc-1', rule='wkhp_drift', status='open', severity='warning', metric='psi', opened_at=opened,
                   last_seen_at=opened, window='2026-03-09', version=3)
    with store.transaction() as rows:
        rows.append(inc.to_dict())
    frame = incident_frame(store)
    assert frame.select('id', 'rule', 'status', 'version', 'window').row(0) == ('inc-1', 'wkhp_drift', 'open', 3, '2026-03-09')
    worst = drifted_features(metrics, frame.row(0, named=True), top=2)
    assert worst['feature'].to_list() == ['WKHP', 'SCHL'] and set(worst['window']) == {'2026-03-09'}
    doc = monitor_report(metrics, store, title='t').to_html()
    assert 'wkhp_drift' in doc and 'inc-1' in doc
