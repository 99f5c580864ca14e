"""FairnessPanel driven as a user would (dropdowns, sliders, toggle, button) on ACS scores; the numbers it shows checked
against fairlearn's MetricFrame on the thresholded decisions; displayed in a real kernel and rendered offline in chromium."""
from __future__ import annotations

import re
import shutil
import subprocess

import nbformat
import numpy as np
import polars as pl
import pytest
from nbclient import NotebookClient

from mlwork.core import DataError, InvalidParameter
from mlwork.datasets import load_acs
from mlwork.models.train import train_model
from mlwork.ui.fairness import FairnessPanel

pytest.importorskip('fairlearn')
from fairlearn.metrics import (MetricFrame, count, false_negative_rate, false_positive_rate,  # noqa: E402
                               selection_rate, true_positive_rate)
from sklearn.metrics import accuracy_score, precision_score  # noqa: E402

ORACLE = {'selection_rate': selection_rate, 'tpr': true_positive_rate, 'fpr': false_positive_rate,
          'fnr': false_negative_rate, 'precision': lambda y, d: precision_score(y, d, zero_division=np.nan),
          'accuracy': accuracy_score}


@pytest.fixture(scope='module')
def scored():
    d = load_acs([2015, 2016]).drop('id')
    model = train_model(d.filter(pl.col('year') == 2015).drop('year'), 'employed', num_boost_round=60, seed=0)
    test = d.filter(pl.col('year') == 2016).drop('year')
    return test.with_columns(score=pl.Series(model.predict(test.drop('employed')))).select('SEX', 'RAC1P', 'employed', 'score')


def _oracle(frame: pl.DataFrame, attrs: tuple[str, ...], thresholds: dict[str, float] | float, metric: str) -> dict[str, float]:
    "fairlearn's MetricFrame on the decisions score >= threshold (the threshold of each row's group)."
    label = frame.select(pl.concat_str([pl.lit(f'{a}=') + pl.col(a).cast(pl.String) for a in attrs], separator=', ')).to_series()
    thr = label.replace_strict(thresholds, return_dtype=pl.Float64) if isinstance(thresholds, dict) else thresholds
    d = (frame['score'] >= thr).cast(pl.Int64).to_numpy()
    mf = MetricFrame(metrics={'m': ORACLE[metric], 'n': count}, y_true=frame['employed'].to_numpy(), y_pred=d,
                     sensitive_features=label.to_numpy())
    return {g: float(v) for g, v in mf.by_group['m'].items()}


def test_shown_numbers_equal_fairlearn_as_the_user_moves_things(scored):
    panel = FairnessPanel(scored, y_true='employed', score='score', sensitive=['SEX', 'RAC1P'])
    seen = set()
    for attrs, metric, t in [(('SEX',), 'selection_rate', 0.5), (('RAC1P',), 'tpr', 0.62), (('SEX', 'RAC1P'), 'fpr', 0.4),
                             (('SEX',), 'precision', 0.8), (('RAC1P',), 'fnr', 0.35), (('SEX', 'RAC1P'), 'accuracy', 0.55)]:
        panel.attribute.value, panel.metric.value, panel.threshold.value = attrs, metric, t
        shown = panel.table()
        want = _oracle(scored, attrs, t, metric)
        got = dict(zip(shown['group'], shown['value']))
        assert set(got) == set(want)
        for g, v in want.items():
            assert (np.isnan(v) and got[g] is None) or abs(got[g] - v) < 1e-12, (g, metric, got[g], v)
            if got[g] is not None:
                assert f'{got[g]:.3f}' in panel.bars.value  # on screen
        ok = shown.filter(pl.col('value').is_not_null() & (pl.col('n') >= 30))
        assert ((ok['lower'] <= ok['value'] + 1e-12) & (ok['value'] <= ok['upper'] + 1e-12)).all()
        seen.add(panel.bars.value)
    assert len(seen) == 6


def test_moving_the_slider_changes_metrics_and_tradeoff(scored):
    panel = FairnessPanel(scored, y_true='employed', score='score', sensitive='RAC1P', threshold=0.5)
    start = panel.table()['value'].to_list()
    assert panel.tradeoff.after == panel.tradeoff.before and panel.tradeoff.disparity == 'selection_rate'
    panel.threshold.value = 0.7
    moved = panel.table()['value'].to_list()
    assert all(b <= a for a, b in zip(start, moved)) and moved != start  # fewer selected everywhere
    d = (scored['score'] >= 0.7).cast(pl.Int64)
    assert abs(panel.tradeoff.after - accuracy_score(scored['employed'], d)) < 1e-12
    assert abs(panel.tradeoff.before - accuracy_score(scored['employed'], (scored['score'] >= 0.5).cast(pl.Int64))) < 1e-12
    assert f'{panel.tradeoff.after:.4f}' in panel.summary.value and 'threshold 0.7000 for everyone' in panel.summary.value


def test_per_group_sliders_show_the_tradeoff(scored):
    panel = FairnessPanel(scored, y_true='employed', score='score', sensitive=['SEX', 'RAC1P'])
    panel.attribute.value = ('SEX',)
    panel.mode.value = 'per group'
    assert panel.groups_box.layout.display is None and panel.threshold.disabled
    s1, s2 = panel.group_sliders
    assert (s1.description, s2.description) == ('SEX=1', 'SEX=2') and s1.value == s2.value == 0.5
    s2.value = 0.42  # what dragging the SEX=2 slider does
    thr = {'SEX=1': 0.5, 'SEX=2': 0.42}
    assert dict(zip(panel.table()['group'], panel.table()['value'])) == pytest.approx(_oracle(scored, ('SEX',), thr, 'selection_rate'), abs=1e-12)
    label = pl.when(pl.col('SEX') == '1').then(0.5).otherwise(0.42)
    d = scored.select((pl.col('score') >= label).cast(pl.Int64)).to_series()
    t = panel.tradeoff
    assert abs(t.after - accuracy_score(scored['employed'], d)) < 1e-12
    sel = _oracle(scored, ('SEX',), thr, 'selection_rate')
    assert abs(t.disparity_after - (max(sel.values()) - min(sel.values()))) < 1e-12 and t.disparity_after > t.disparity_before
    panel.mode.value = 'global'
    assert panel.groups_box.layout.display == 'none' and panel.tradeoff.after == panel.tradeoff.before


def test_apply_mitigation_sets_the_sliders(scored):
    panel = FairnessPanel(scored, y_true='employed', score='score', sensitive=['SEX', 'RAC1P'], tolerance=0.01)
    panel.attribute.value = ('RAC1P',)
    before = panel.tradeoff
    panel.constraint.value = 'equal_opportunity'
    panel.apply.click()
    m = panel.mitigation
    assert panel.mode.value == 'per group' and panel.metric.value == 'tpr'
    assert [s.value for s in panel.group_sliders] == list(m.thresholds.values())
    tpr = _oracle(scored, ('RAC1P',), m.thresholds, 'tpr')
    big = [g for g in tpr if g not in m.small_groups]
    assert max(tpr[g] for g in big) - min(tpr[g] for g in big) <= 0.01 + 1e-12
    assert abs(panel.tradeoff.disparity_after - m.gap) < 1e-12 and abs(panel.tradeoff.after - m.tradeoff.after) < 1e-12
    print(f'\nRAC1P equal opportunity: accuracy {before.before:.4f} -> {panel.tradeoff.after:.4f}, '
          f'tpr difference {panel.tradeoff.disparity_before:.4f} -> {panel.tradeoff.disparity_after:.4f}')


def test_bad_input(scored):
    with pytest.raises(InvalidParameter, match="'constraint' parameter of FairnessPanel"):
        FairnessPanel(scored, y_true='employed', score='score', sensitive='SEX', constraint='fair')
    with pytest.raises(DataError, match='look like decisions'):
        FairnessPanel(scored, y_true='employed', score='employed', sensitive='SEX')
    with pytest.raises(DataError, match='unknown group'):
        FairnessPanel(scored, y_true='employed', score='score', sensitive='SEX').set_thresholds({'SEX=3': 0.4})


def test_widget_state_serialises(scored):
    from ipywidgets.embed import embed_data
    panel = FairnessPanel(scored.head(2000), y_true='employed', score='score', sensitive='SEX')
    text = str(embed_data(views=[panel])['manager_state'])
    assert 'FairnessPanel' not in text and '<svg' in text and 'apply mitigation' in text


PANEL_CELL = ("import numpy as np, polars as pl\n"
              "from mlwork.ui.fairness import FairnessPanel\n"
              "r = np.random.default_rng(0)\n"
              "y = r.integers(0, 2, 600)\n"
              "f = pl.DataFrame({'grp_zq': r.choice(['a', 'b'], 600), 'y': y, 'p': 0.3 * y + r.uniform(0, 0.7, 600)})\n"
              "panel = FairnessPanel(f, y_true='y', score='p', sensitive='grp_zq')\n"
              "panel")


def test_panel_displays_in_a_real_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PANEL_CELL)]
    NotebookClient(nb, timeout=120, kernel_name='python3').execute()
    out = nb.cells[0].outputs
    assert out and out[0]['output_type'] == 'execute_result', out
    assert 'application/vnd.jupyter.widget-view+json' in out[0]['data']


CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)


def test_panel_renders_offline_in_chromium(tmp_path):
    "The executed notebook as mlwork's standalone HTML, opened in headless chromium with every request sent to a dead proxy."
    from mlwork.pipelines.html import notebook_html
    assert CHROMIUM, 'chromium is not installed: `apt-get install -y chromium`'
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(PANEL_CELL)]
    NotebookClient(nb, timeout=120, kernel_name='python3', store_widget_state=True).execute()
    notebook_html(nb, tmp_path / 'panel.html')
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
           '--disable-extensions', '--allow-file-access-from-files', '--proxy-server=http://127.0.0.1:9',
           '--proxy-bypass-list=<-loopback>', '--virtual-time-budget=5000', '--dump-dom', (tmp_path / 'panel.html').as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    # rendered widget DOM, not the JSON state: the bars' SVG inside an HTML widget, the slider, the button
    assert re.search(r'class="widget-html-content"><style>.*?grp_zq=a.*?<svg[^>]*>.*?class="bar"', dom, flags=re.S)
    assert 'widget-slider' in dom and 'apply mitigation' in dom
