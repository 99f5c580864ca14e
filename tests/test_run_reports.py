"""Run reports (mlwork.pipelines.html) and the report index (mlwork.pipelines.index), end to end: a tiny notebook
executed by papermill with a DriftPanel, a matplotlib plot and (in one variant) a failing cell; exported; opened in
headless chromium with every http(s) request sent to a dead proxy, so what renders, renders offline."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from nbconvert import HTMLExporter

from mlwork.pipelines.html import notebook_html
from mlwork.pipelines.index import index_rows, write_index

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    assert CHROMIUM, ('chromium is not installed: `apt-get install -y chromium` (the browser tests of the '
                      'standalone report need it; they are not skipped on purpose)')
    # every http(s) request goes to a closed port: the page must render from what the file holds
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
           '--disable-extensions', '--allow-file-access-from-files', '--proxy-server=http://127.0.0.1:9',
           '--proxy-bypass-list=<-loopback>', '--virtual-time-budget=5000', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


SOURCE = {
    'params': 'fail = False\nn_rows = 300',
    'panel': ("import numpy as np, polars as pl\n"
              "from mlwork.drift.univariate import DriftDetector\n"
              "from mlwork.ui.panels import DriftPanel\n"
              "rng_srcq = np.random.default_rng(0)\n"
              "ref = pl.DataFrame({'income_zq': rng_srcq.normal(0, 1, n_rows), 'region_zq': rng_srcq.choice(['n', 's'], n_rows)})\n"
              "cur = pl.DataFrame({'income_zq': rng_srcq.normal(1, 1, n_rows), 'region_zq': rng_srcq.choice(['n', 's'], n_rows)})\n"
              "DriftPanel(DriftDetector().fit(ref).score(cur), reference=ref, current=cur)"),
    'plot': ("import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
             "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9]); plt.title('squares'); plt.show()"),
    'fail': "if fail:\n    raise ValueError('deliberate failure zq')\nprint('rows written: ' + str(n_rows))",
}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The tiny notebook executed twice with papermill (succeeding, failing) and exported both ways."
    d = tmp_path_factory.mktemp('runs')
    v4 = nbformat.v4
    cells = [v4.new_code_cell(SOURCE['params'], metadata={'tags': ['parameters']}),
             v4.new_markdown_cell('# Tiny run\nA drift panel and a plot.'),
             v4.new_code_cell(SOURCE['panel']), v4.new_code_cell(SOURCE['plot']), v4.new_code_cell(SOURCE['fail'])]
    nbformat.write(v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                                                           'language': 'python'}}), d / 'tiny.ipynb')
    out: dict = {'dir': d, 'export_s': {}}
    for name, fail in (('ok', False), ('bad', True)):
        try:
            pm.execute_notebook(str(d / 'tiny.ipynb'), str(d / f'{name}.ipynb'), parameters={'fail': fail},
                                kernel_name='python3', progress_bar=False)
        except pm.PapermillExecutionError:
            assert fail
        t = time.perf_counter()
        notebook_html(d / f'{name}.ipynb', d / f'{name}.html')
        out['export_s'][name] = time.perf_counter() - t
    notebook_html(d / 'ok.ipynb', d / 'ok_code.html', show_code=True)
    print('export seconds per notebook:', {k: round(v, 2) for k, v in out['export_s'].items()})
    return out


def _outside_manager(doc: str) -> str:
    "The page without the inlined widget manager's text."
    return re.sub(r'<script[^>]*id="mlwork-widget-manager"[^>]*>.*?</script>', '', doc, flags=re.S)


def test_code_hidden_by_default_and_nothing_fetched(runs):
    doc = (runs['dir'] / 'ok.html').read_text(encoding='utf-8')
    assert 'rows written: 300' in doc and '<img' in doc and 'data:image/png;base64' in doc
    assert 'rng_srcq' not in doc and 'deliberate failure zq' not in doc  # sources are gone
    assert doc.count('id="mlwork-widget-manager"') == 1 and 'application/vnd.jupyter.widget-state+json' in doc
    assert not re.search(r'''(?:src|href)\s*=\s*["']?(?:https?:)?//''', doc), 'an element loads from the network'
    rest = _outside_manager(doc)
    for cdn in ('unpkg', 'cdnjs', 'jsdelivr', 'require.min.js', 'mathjax', '@import url(http'):
        assert cdn not in rest.lower(), cdn


def test_show_code_keeps_sources(runs):
    doc = (runs['dir'] / 'ok_code.html').read_text(encoding='utf-8')
    assert 'rng_srcq' in doc and 'deliberate failure zq' in doc and 'rows written: 300' in doc


def test_failing_cell_shows_source_and_traceback(runs):
    doc = (runs['dir'] / 'bad.html').read_text(encoding='utf-8')
    assert 'rng_srcq' not in doc                         # the cells that worked still hide their code
    banner = re.search(r'Failed in cell (\d+): ValueError: deliberate failure zq <a href="#(cell-id=[^"]+)">', doc)
    assert banner, 'no failure line linking to the cell'
    start = doc.index(f'id="{banner.group(2)}"')
    end = min(i for i in (doc.find('class="jp-Cell ', start), doc.index('</main>', start)) if i > 0)
    cell = doc[start:end]                                # the failing cell's HTML, up to the next cell
    assert 'jp-InputArea-editor' in cell and 'raise' in cell and 'deliberate failure zq' in cell  # its source
    assert 'jp-RenderedText' in cell and cell.count('ValueError') >= 2                           # and traceback
    nb = nbformat.read(runs['dir'] / 'bad.ipynb', as_version=4)
    written = [c for c in nb.cells if not set(c.metadata.get('tags', [])) & {'injected-parameters', 'papermill-error-cell-tag'}]
    assert 'deliberate failure zq' in written[int(banner.group(1))].source   # numbered as in the notebook as written
    assert 'rows written: 300' not in doc                # the line after the raise never ran


def test_widget_renders_offline_in_chromium(runs):
    out = _chromium('--dump-dom', (runs['dir'] / 'ok.html').as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    # rendered widget DOM, not the JSON state: the feature list's <option>s and the detail pane's HTML
    assert re.search(r'<select[^>]*>\s*<option[^>]*>[^<]*income_zq', dom), 'the feature list did not render'
    assert re.search(r'class="widget-html-content"><style>.*?<b>income_zq</b>', dom, flags=re.S)
    assert 'widget-toggle-button' in dom and 'region_zq' in dom


def test_stock_nbconvert_needs_the_network(runs, tmp_path):
    "The control: nbconvert's default HTML renders no widget behind the dead proxy (what notebook_html fixes)."
    body, _ = HTMLExporter().from_filename(str(runs['dir'] / 'ok.ipynb'))
    assert 'https://' in body and 'embed-amd.js' in body
    (tmp_path / 'stock.html').write_text(body, encoding='utf-8')
    dom = _chromium('--dump-dom', (tmp_path / 'stock.html').as_uri()).stdout
    assert 'Tiny run' in dom and 'widget-toggle-button' not in dom and not re.search(r'<select[^>]*>\s*<option', dom)


def _manifest(run_id: str, status: str, started: str, duration: float, *, batch=None, error=None, outputs=None) -> dict:
    t0 = dt.datetime.fromisoformat(started)
    return {'schema': 'mlwork.run/1', 'run_id': run_id, 'pipeline': {'name': run_id.split('-')[0], 'source': 'builtin'},
            'batch': batch, 'status': status, 'started': started,
            'finished': (t0 + dt.timedelta(seconds=duration)).isoformat(), 'duration_s': duration,
            'parameters': {'fail': status == 'failed'}, 'inputs': [], 'models': {'read': [], 'written': []}, 'aliases': [],
            'metrics': {'roc_auc': 0.8312} if status == 'succeeded' else {},
            'decisions': [{'what': 'promotion gate', 'decision': 'refused', 'why': 'AUC gain -0.004 below 0'}],
            'outputs': outputs or {'report': 'report.html', 'notebook': 'notebook.ipynb', 'manifest': 'manifest.json'},
            'error': error, 'rerun_of': None}


def test_index_links_order_and_browser(runs, tmp_path):
    reports = tmp_path / 'reports'
    ms = [_manifest('train-20261202T100000Z-aa', 'succeeded', '2026-12-02T10:00:00+00:00', 12.0,
                    outputs={'report': 'report.html', 'notebook': 'notebook.ipynb', 'manifest': 'manifest.json',
                             'model_card': 'outputs/card.html'}),
          _manifest('drift-20261202T120000Z-bb', 'failed', '2026-12-02T12:00:00+00:00', 4.0,
                    error={'cell': 4, 'source': '…', 'ename': 'ValueError', 'evalue': 'deliberate failure zq'}),
          *[_manifest(f'drift-20261202T08000{i}Z-c{s}', 'succeeded', f'2026-12-02T08:00:0{i}+00:00', 5.0,
                      batch={'id': 'batch-20261202T080000Z-cc', 'over': {'segment': s}}) for i, s in enumerate('ab')]]
    for m in ms:
        folder = reports / m['run_id']
        (folder / 'outputs').mkdir(parents=True)
        src = runs['dir'] / ('bad' if m['status'] == 'failed' else 'ok')
        shutil.copy(src.with_suffix('.ipynb'), folder / 'notebook.ipynb')
        notebook_html(folder / 'notebook.ipynb', folder / 'report.html', manifest=m)
        (folder / 'manifest.json').write_text(json.dumps(m))
        if 'model_card' in m['outputs']:
            (folder / 'outputs' / 'card.html').write_text('<p>card</p>')
    p = write_index(reports)                                        # found from the folders' manifest.json files
    doc = p.read_text(encoding='utf-8')
    hrefs = re.findall(r'href="([^"]+)"', doc)
    assert len(hrefs) == 3 + 4 + 3 + 3 and all((reports / h).is_file() for h in hrefs), hrefs
    assert 'train-20261202T100000Z-aa/outputs/card.html' in hrefs
    order = [doc.index(x) for x in ('drift-20261202T120000Z-bb', 'train-20261202T100000Z-aa', 'batch-20261202T080000Z-cc',
                                    'drift-20261202T080000Z-ca', 'drift-20261202T080001Z-cb')]
    assert order == sorted(order), 'not newest first, or a batch member outside its batch'
    assert 'class="run failed"' in doc and 'ValueError: deliberate failure zq' in doc
    rows = index_rows(ms, reports)
    assert [r['kind'] for r in rows] == ['run', 'run', 'batch'] and len(rows[2]['runs']) == 2
    assert json.loads(json.dumps(rows)) == rows
    report = (reports / 'drift-20261202T120000Z-bb' / 'report.html').read_text(encoding='utf-8')
    assert 'st failed' in report and '<th>fail</th><td>True</td>' in report   # the run header from the manifest
    out = _chromium('--dump-dom', p.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count('<tr class="') == 5 and 'roc_auc = 0.8312' in out.stdout
    assert '<script' not in doc
