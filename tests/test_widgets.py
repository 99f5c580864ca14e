"""DriftPanel driven as a user would (buttons, list), from frames and from a JSON twin, and displayed in a real kernel."""
from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from mlwork.core import InvalidParameter
from mlwork.drift.univariate import DriftDetector
from mlwork.drift.report import DriftSummary, drift_report
from mlwork.report import format_value
from mlwork.synthetic import Drift, generate
from mlwork.ui.panels import DriftPanel
from mlwork.drift.windows import drift_over_time

FEATS = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount', 'loan_purpose',
         'employment', 'region']


@pytest.fixture(scope='module')
def credit():
    ref = generate('credit', n_rows=1500, seed=1).frame
    cur = generate('credit', n_rows=1500, seed=2, drift=[Drift(('income',), 0.8, start='2024-07-01'),
                                                         Drift(('region',), 0.4, start='2024-03-01')]).frame
    res = DriftDetector().fit(ref.select(FEATS)).score(cur.select(FEATS))
    wd = drift_over_time(ref, cur, columns=FEATS, every='1mo')
    return ref, cur, res, wd, DriftSummary.from_frames(ref, cur, res, over_time=wd, importance={'income': 0.5})


def test_every_feature_shows_its_own_numbers(credit):
    *_, s = credit
    panel = DriftPanel(s)
    assert panel.visible == s.names and panel.selected == s.names[0]
    shown = set()
    for f in s.features:
        panel.select(f.name)
        v = panel.detail.value
        assert f'<b>{f.name}</b>' in v and format_value(f.result['statistic']) in v and format_value(f.result['p_adjusted']) in v
        assert '<svg' in v and 'effect / bar per window' in v
        assert f'">{f.outcome}</span>' in v and 'no drift' not in v
        assert ('badge bad">material' in v) == (f.outcome == 'material')
        shown.add(v)
    assert len(shown) == len(s.features)  # every selection changes what is displayed


def test_user_clicks_update_the_view(credit):
    *_, s = credit
    panel = DriftPanel(s)
    panel.features.value = 'age'  # what clicking the list does
    assert panel.selected == 'age' and '<b>age</b>' in panel.detail.value
    panel.outcome.value = 'material'  # what clicking the button does
    assert set(panel.visible) == set(s.material) == {'income', 'region'}
    assert panel.selected == s.material[0] and f'<b>{s.material[0]}</b>' in panel.detail.value
    panel.kind.value = 'numeric'
    assert panel.visible == ['income']
    panel.outcome.value = 'no evidence'
    assert panel.visible == [f.name for f in s.features if f.outcome == 'no evidence' and f.kind == 'numeric']
    panel.kind.value = 'categorical'
    assert panel.visible == [f.name for f in s.features if f.outcome == 'no evidence' and f.kind == 'categorical']
    assert all(label.startswith('○') and 'no evidence' in label for label, _ in panel.features.options)


@pytest.mark.parametrize('outcome', ['all', 'material', 'changed', 'no evidence'])
@pytest.mark.parametrize('kind', ['all', 'numeric', 'categorical'])
def test_filters_match_the_summary(credit, outcome, kind):
    *_, s = credit
    panel = DriftPanel(s).filter(outcome=outcome, kind=kind)
    want = [f.name for f in s.features if (outcome == 'all' or outcome == f.outcome)
            and (kind == 'all' or kind == f.kind)]
    assert panel.visible == want
    assert panel.selected == (want[0] if want else None)
    assert (want[0] if want else 'No feature matches') in panel.detail.value


def test_from_result_and_frames_and_from_json_twin(credit, tmp_path):
    ref, cur, res, wd, s = credit
    a = DriftPanel(res, reference=ref, current=cur, over_time=wd, importance={'income': 0.5})
    assert a.visible == s.names
    p = drift_report(s, tmp_path / 'd.html')
    b = DriftPanel(DriftSummary.from_json(p.with_suffix('.json')))  # no frames needed any more
    for name in ('income', 'region', 'age'):
        assert a.select(name).detail.value == b.select(name).detail.value
    with pytest.raises(InvalidParameter, match='must be the two polars DataFrames'):
        DriftPanel(res)
    with pytest.raises(InvalidParameter, match="'outcome' parameter of DriftPanel.filter"):
        a.filter(outcome='maybe')


def test_widget_state_serialises(credit):
    *_, s = credit
    from ipywidgets.embed import embed_data
    panel = DriftPanel(s).select('income')
    data = embed_data(views=[panel])
    text = json.dumps(data['manager_state'])
    assert '<b>income</b>' in text and 'DriftPanel' not in text and 'Dataset alarm' in text  # plain VBox/Select/HTML models: any frontend renders them


def test_panel_displays_in_a_real_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import polars as pl, numpy as np\n"
        "from mlwork.ui.panels import DriftPanel\n"
        "from mlwork.drift.univariate import DriftDetector\n"
        "r = np.random.default_rng(0)\n"
        "ref = pl.DataFrame({'a': r.normal(0, 1, 500), 'b': r.choice(['x', 'y'], 500)})\n"
        "cur = pl.DataFrame({'a': r.normal(1, 1, 500), 'b': r.choice(['x', 'y'], 500)})\n"
        "panel = DriftPanel(DriftDetector().fit(ref).score(cur), reference=ref, current=cur)\n"
        "panel")]
    NotebookClient(nb, timeout=120, kernel_name='python3').execute()
    out = nb.cells[0].outputs
    assert out and out[0]['output_type'] == 'execute_result', out
    assert 'application/vnd.jupyter.widget-view+json' in out[0]['data']
