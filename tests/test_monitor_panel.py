"""MonitorPanel (mlwork.ui.monitor) driven as a user would (metric and group pickers, window selector, version filter,
incident list): the numbers it shows checked against polars filters of the metric table written independently, the
drill-down against the table's drift rows; displayed in a real kernel and rendered offline in chromium."""
from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from mlwork.core import DataError
from mlwork.report import format_value
from mlwork.ui.monitor import MonitorPanel

from test_monitor_report import INCIDENTS, history  # the same realistic table as the report's tests

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)


@pytest.fixture(scope='module')
def metrics() -> pl.DataFrame:
    return history(seed=1)


def _oracle(m: pl.DataFrame, kind: str, metric: str, *, group=None, versions=None, windows=None) -> pl.DataFrame:
    q = m.filter(pl.col('kind') == kind, pl.col('metric') == metric)
    if group is not None:
        q = q.filter(pl.col('group') == group)
    if versions is not None:
        q = q.filter(pl.col('version').is_in(versions))
    if windows is not None:
        q = q.filter(pl.col('window').is_in(windows))
    return q.sort('version', 'group', 'window_start', nulls_last=True)


def _shown_numbers(html: str) -> list[str]:
    return re.findall(r'<td class="num">([^<]*)</td>', html)


def test_shown_numbers_equal_the_table_as_the_user_moves_things(metrics):
    panel = MonitorPanel(metrics, INCIDENTS, thresholds={'roc_auc': 0.76})
    assert panel.kind_metric == ('performance', 'roc_auc')
    want = _oracle(metrics, 'performance', 'roc_auc')
    assert panel.shown()['value'].to_list() == want['value'].to_list()
    assert panel.shown()['lower'].to_list() == want['lower'].to_list()
    for v in want['value']:
        assert format_value(v) in _shown_numbers(panel.values.value)
    assert '<svg' in panel.plot.value and 'thresholds: 0.76' in panel.values.value
    # the last 3 windows only
    panel.last.value = 3
    wins = sorted(metrics['window'].unique())[-3:]
    assert panel.shown()['value'].to_list() == _oracle(metrics, 'performance', 'roc_auc', windows=wins)['value'].to_list()
    # the challenger only
    panel.versions.value = ((4, 'challenger'),)
    assert panel.shown()['value'].to_list() == _oracle(metrics, 'performance', 'roc_auc', versions=[4], windows=wins)['value'].to_list()
    # another metric, a grouped one, one group, a date range
    panel.versions.value = tuple(v for _, v in panel.versions.options)
    panel.metric.value = ('fairness', 'selection_rate')
    assert [o for _, o in panel.group.options] == [None, 'SEX=1', 'SEX=2'] and not panel.group.disabled
    panel.group.value = 'SEX=2'
    panel.mode.value = 'date range'
    panel.since.value, panel.until.value = date(2026, 3, 4), date(2026, 3, 9)
    days = [f'2026-03-{d:02d}' for d in range(4, 10)]
    want = _oracle(metrics, 'fairness', 'selection_rate', group='SEX=2', windows=days)
    assert want.height == 6 + 2 and panel.shown()['value'].to_list() == want['value'].to_list()
    for v in want['value']:
        assert format_value(v) in _shown_numbers(panel.values.value)
    assert panel.last.disabled and not panel.since.disabled
    # a metric without groups: the group picker is disabled; cost rows show the money per 1,000 predictions
    panel.metric.value = ('cost', 'money_per_1k_predictions')
    assert panel.group.disabled or panel.group.options == (('all', None), ('USD', 'USD'))
    panel.mode.value = 'last N windows'
    assert panel.shown()['value'].to_list() == _oracle(metrics, 'cost', 'money_per_1k_predictions', windows=wins)['value'].to_list()


def test_drill_down_from_an_incident_lists_the_drifted_features(metrics):
    panel = MonitorPanel(metrics, INCIDENTS, thresholds={'roc_auc': 0.76}, top=3)
    assert panel.drill_down().is_empty() and 'pick an incident' in panel.drill.value
    labels = [label for label, _ in panel.incident.options]
    assert len(labels) == 3 and 'wkhp_psi' in labels[1] and 'auc_drop' in labels[2]
    panel.incident.value = dict(panel.incident.options)[labels[1]]   # what clicking the PSI incident does
    assert panel.kind_metric == ('drift', 'psi')      # the panel jumps to the incident's metric
    want = (metrics.filter(pl.col('kind') == 'drift', pl.col('metric') == 'psi', pl.col('version') == 3,
                           pl.col('window') == '2026-03-07').sort('value', descending=True).head(3))
    got = panel.drill_down()
    assert got['feature'].to_list() == want['group'].to_list() and got['feature'][0] == 'WKHP'
    assert got['psi'].to_list() == want['value'].to_list()
    for f in want['group']:
        assert f'<td>{f}</td>' in panel.drill.value
    assert 'window 2026-03-07' in panel.drill.value and 'version 3' in panel.drill.value
    panel.select_incident('7')                      # the AUC incident names its window, 2026-03-08: SCHL drifts there too
    assert panel.kind_metric[1] == 'roc_auc'
    want = (metrics.filter(pl.col('kind') == 'drift', pl.col('metric') == 'psi', pl.col('version') == 3,
                           pl.col('window') == '2026-03-08').sort('value', descending=True).head(3))
    assert panel.drill_down()['feature'].to_list() == want['group'].to_list()
    assert panel.drill_down()['feature'].to_list()[:2] == ['WKHP', 'SCHL']
    panel.incident.value = None
    assert 'pick an incident' in panel.drill.value


def test_incident_spans_follow_the_window_selector(metrics):
    "The AUC incident (window 2026-03-08) is shaded while its windows are shown, and not when the range ends before it."
    patches = lambda p: len(re.findall(r'id="patch_\d+"', p.plot.value))  # the axes, the spines, the spans
    panel = MonitorPanel(metrics, INCIDENTS)
    with_incident = patches(panel)
    panel.mode.value = 'date range'
    panel.since.value, panel.until.value = date(2026, 3, 2), date(2026, 3, 4)
    assert patches(panel) == with_incident - 1
    panel.until.value = date(2026, 3, 9)
    assert patches(panel) == with_incident


def test_bad_input(metrics):
    with pytest.raises(DataError, match='needs a non-empty metric table'):
        MonitorPanel(metrics.clear())
    with pytest.raises(DataError, match="no incident '99'"):
        MonitorPanel(metrics, INCIDENTS).select_incident('99')
    with pytest.raises(DataError, match="incident 0 has no 'opened_at'"):
        MonitorPanel(metrics, [{'rule': 'r', 'metric': 'm', 'severity': 's', 'version': 1, 'resolved_at': None}])


def test_widget_state_serialises(metrics):
    from ipywidgets.embed import embed_data
    text = str(embed_data(views=[MonitorPanel(metrics, INCIDENTS)])['manager_state'])
    assert 'MonitorPanel' not in text and '<svg' in text and 'auc_drop' in text


PANEL_CELL = ("from datetime import datetime, timedelta, timezone\n"
              "from mlwork.monitor.metrics import metric_frame\n"
              "from mlwork.ui.monitor import MonitorPanel\n"
              "t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)\n"
              "rows = [{'window_start': t0 + timedelta(days=d), 'window_end': t0 + timedelta(days=d + 1), 'window': f'day{d}',\n"
              "         'version': 1, 'arm': 'champion', 'kind': 'drift', 'metric': 'psi', 'group': g, 'value': v * d, 'n': 100}\n"
              "        for d in range(5) for g, v in (('feat_zq', 0.1), ('other', 0.01))]\n"
              "inc = [{'id': 'a', 'rule': 'rule_zq', 'metric': 'psi', 'severity': 'warning', 'version': 1, 'window': 'day3',\n"
              "        'opened_at': t0 + timedelta(days=3), 'resolved_at': None}]\n"
              "panel = MonitorPanel(metric_frame(rows, run_id='r', model='m'), inc)\n"
              "panel.select_incident('a')\n"
              "panel")


def _run_panel_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(PANEL_CELL)]
    NotebookClient(nb, timeout=120, kernel_name='python3', store_widget_state=True).execute()
    return nb


def test_panel_displays_in_a_real_kernel_and_renders_offline(tmp_path):
    from mlwork.pipelines.html import notebook_html
    nb = _run_panel_notebook()
    out = nb.cells[0].outputs
    assert out and out[0]['output_type'] == 'execute_result', out
    assert 'application/vnd.jupyter.widget-view+json' in out[0]['data']
    assert CHROMIUM, 'chromium is not installed: `apt-get install -y chromium`'
    notebook_html(nb, tmp_path / 'panel.html')
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
           '--disable-extensions', '--allow-file-access-from-files', '--proxy-server=http://127.0.0.1:9',
           '--proxy-bypass-list=<-loopback>', '--virtual-time-budget=5000', '--dump-dom', (tmp_path / 'panel.html').as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    # rendered widget DOM: the series' SVG inside an HTML widget, the drill-down table naming the drifted feature first
    assert re.search(r'class="widget-html-content"><style>.*?<svg', dom, flags=re.S)
    assert re.search(r'class="widget-html-content"><style>.*?rule_zq.*?<td>feat_zq</td>.*?<td>other</td>', dom, flags=re.S)
    assert 'widget-dropdown' in dom and 'widget-select' in dom
