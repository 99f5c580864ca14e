"""The built-in pipeline notebooks, executed with papermill itself (not mlwork's runner) on one workspace, in the order of
the shell sequence: ingest, validate, profile, drift, train, evaluate, promote, then a cycle on the next window."""
from __future__ import annotations

import ast
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pm = pytest.importorskip('papermill')
from papermill.exceptions import PapermillExecutionError  # noqa: E402

import mlwork  # noqa: E402
from mlwork.core import init_workspace  # noqa: E402
from mlwork.data.profile import profile_path  # noqa: E402
from mlwork.data.store import DatasetStore  # noqa: E402
from mlwork.pipelines.context import RUN_DIR_ENV, read_records  # noqa: E402

NOTEBOOKS = Path(mlwork.__file__).parent / 'pipelines' / 'notebooks'  # as shipped in the package
PIPELINES = ('ingest', 'validate', 'profile', 'drift', 'train', 'evaluate', 'promote', 'cycle', 'tour', 'audit', 'monitor', 'retrain')
WRITERS = ('ingest', 'validate', 'profile', 'train', 'promote', 'cycle', 'audit', 'monitor', 'retrain')
SEEDED = ('drift', 'train', 'evaluate', 'promote', 'cycle', 'audit', 'monitor', 'retrain')
TYPES = {'str': str, 'int': int, 'float': float, 'bool': bool}
MODEL = 'acs_employment'


class Workspace:
    "One workspace for the module, and a run helper that executes a notebook as a fake `mlwork run` would host it."

    def __init__(self, root: Path):
        self.root = root
        self.ws = init_workspace(root / 'ws').workspace
        self.store = DatasetStore.from_workspace(self.ws)
        self.runs = 0

    def run(self, name: str, **params):
        "Execute pipeline `name` with papermill; its records (the context module writes them under $MLWORK_RUN_DIR) and run folder."
        self.runs += 1
        folder = self.root / 'runs' / f'{self.runs:02d}-{name}'
        folder.mkdir(parents=True)
        # the kernel inherits this process's environment: the run folder, and OpenMP threads that sleep when idle
        # (LightGBM's spinning threads make training several times slower in a kernel on a busy 2-core machine)
        with _env(RUN_DIR_ENV, str(folder)), _env('OMP_WAIT_POLICY', os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')):
            try:
                pm.execute_notebook(str(NOTEBOOKS / f'{name}.ipynb'), str(folder / 'notebook.ipynb'),
                                    parameters={'home': str(self.ws.root), **params}, cwd=str(self.root),
                                    kernel_name='python3', progress_bar=False)
            finally:
                self.records = read_records(folder)
        return self.records, folder

    def registry(self):
        from mlwork.models.registry import Registry
        return Registry(self.ws)

    def state(self) -> dict:
        "What a failed run must leave as it was: every dataset's version, every model version with its aliases, the profiles."
        models = {f'{n}@{v.version}': sorted(v.aliases) for n, vs in self.registry().list().models.items() for v in vs}
        return {'datasets': {n: self.store.version(n) for n in self.store.list()}, 'models': models,
                'files': sorted(str(p.relative_to(self.ws.root)) for p in self.ws.root.rglob('*')
                                if p.is_file() and 'tmp' not in p.parts and 'audit' not in p.parts and p.suffix != '.lock')}


@contextmanager
def _env(key: str, value: str):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def kinds(records, kind):
    return [r for r in records if r['kind'] == kind]


def decision(records, what):
    found = [r for r in records if r['kind'] == 'decision' and r['what'] == what]
    assert found, (what, records)
    return found[-1]


def written(folder):
    "The dataset versions a run recorded as written (`mlwork.pipelines.context.record_dataset`), as (name, version, reused)."
    lines = (folder / 'record.jsonl').read_text().splitlines() if (folder / 'record.jsonl').exists() else []
    return [(r['name'], r['version'], r['reused']) for r in map(json.loads, lines) if r['kind'] == 'dataset']


def output(records, name, folder):
    found = [r for r in records if r['kind'] == 'output' and r['name'] == name]
    assert found, (name, records)
    p = Path(found[-1]['path'])
    return p if p.is_absolute() else folder / p


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp('pipelines'))


def test_parameters_are_typed_documented_and_safe():
    "papermill reads every parameter with its type, default and help; writers have dry_run, random ones a seed."
    for name in PIPELINES:
        nb = json.loads((NOTEBOOKS / f'{name}.ipynb').read_text())
        code = [c for c in nb['cells'] if c['cell_type'] == 'code']
        assert 'parameters' in code[0]['metadata'].get('tags', []), name
        assert not any(c['outputs'] for c in code), f'{name} is committed with outputs'
        params = pm.inspect_notebook(str(NOTEBOOKS / f'{name}.ipynb'))
        assert len(params) == len([ln for ln in ''.join(code[0]['source']).splitlines() if ln.strip()]), (name, sorted(params))
        for p in params.values():
            assert p['inferred_type_name'] in TYPES, (name, p)
            assert p['help'] and '=' not in p['help'], (name, p)
            default = ast.literal_eval(p['default'])
            assert isinstance(default, TYPES[p['inferred_type_name']]), (name, p)
        assert params['home']['default'] == "''", name
        assert ('dry_run' in params) == (name in WRITERS), name
        assert ('seed' in params) == (name in SEEDED), name
    assert pm.inspect_notebook(str(NOTEBOOKS / 'drift.ipynb'))['current']['default'] == "'acs@latest'"


def test_ingest_reference_then_a_window(ws):
    records, _ = ws.run('ingest')
    assert ws.store.version('acs') == 0 and ws.store.version('acs_labels') == 0
    assert 'employed' not in ws.store.read('acs').columns  # features and labels apart
    assert decision(records, 'ingest')['decision'] == 'stored'
    records, folder = ws.run('ingest', year=2016)
    assert ws.store.version('acs') == 1 and ws.store.read('acs#1')['year'].unique().to_list() == [2016]
    assert written(folder) == [('acs', 1, False), ('acs_labels', 1, False)]
    assert ws.store.read('acs_labels#1').height == ws.store.read('acs#1').height
    assert [(r['name'], r['value']) for r in kinds(records, 'metric')] == [('rows', ws.store.read('acs#1').height)]


def test_validate_infers_the_contract_and_stores_with_lineage(ws):
    records, folder = ws.run('validate')
    assert (ws.ws.root / 'contracts' / 'acs.yaml').is_file()
    assert output(records, 'contract', folder) == (ws.ws.root / 'contracts' / 'acs.yaml').resolve()
    assert [(r['param'], r['dataset'], r['version']) for r in kinds(records, 'input')] == [('batch', 'acs', 1), ('reference', 'acs', 0)]
    assert ws.store.read('acs_valid').height + (ws.store.read('acs_valid__quarantine').height if ws.store.exists('acs_valid__quarantine') else 0) \
        == ws.store.read('acs#1').height  # nothing dropped
    assert [r['inputs'] for r in ws.store.lineage('acs_valid')] == [['acs@1']]
    assert ('acs_valid', 0, False) in written(folder)
    assert decision(records, 'validation')['decision'].startswith('passed')


def test_profile_is_stored_beside_its_version(ws):
    records, folder = ws.run('profile')
    stored = Path(profile_path(ws.ws.uri('profiles'), 'acs', 1))
    assert stored.is_file() and output(records, 'profile', folder) == stored.resolve()
    assert output(records, 'data_report', folder).is_file()
    assert {r['name']: r['value'] for r in kinds(records, 'metric')} == {'rows': ws.store.read('acs').height, 'columns': 18}


def test_drift_writes_its_report_and_records_the_alarm(ws):
    records, folder = ws.run('drift')
    assert [(r['param'], r['version']) for r in kinds(records, 'input')] == [('reference', 0), ('current', 1)]
    html, js = output(records, 'drift_report', folder), output(records, 'drift_report_json', folder)
    assert html.is_file() and html.parent == folder / 'outputs'
    summary = json.loads(js.read_text())
    assert decision(records, 'dataset alarm')['decision'] == ('raised' if summary['alarm'] else 'not raised')
    metrics = {r['name']: r['value'] for r in kinds(records, 'metric')}
    assert metrics['columns_changed'] == len(summary['drifted']) > 0 and metrics['columns_material'] == len(summary['material'])


def test_train_registers_a_challenger_with_its_card(ws):
    records, folder = ws.run('train')
    mv = ws.registry().show(MODEL, 'challenger')
    assert mv.version == 1 and mv.description == 'trained on acs@1 + acs_labels@1'
    assert [(r['action'], r['version']) for r in kinds(records, 'model')] == [('written', 1)]
    assert [(r['alias'], r['old'], r['new']) for r in kinds(records, 'alias')] == [('challenger', None, 1)]
    card = output(records, 'model_card', folder)
    assert card.is_file() and 'acs_labels@1' in card.read_text()
    assert 0.85 < {r['name']: r['value'] for r in kinds(records, 'metric')}['roc_auc'] < 0.95


def test_evaluate_then_promote_the_first_model(ws):
    records, folder = ws.run('evaluate')
    gate = decision(records, 'promotion gate')
    assert gate['decision'] == 'passed' and 'no champion yet' in gate['why']
    assert json.loads(output(records, 'gate', folder).read_text())['passed'] is True
    records, _ = ws.run('promote')
    assert [(r['alias'], r['old'], r['new']) for r in kinds(records, 'alias')] == [('champion', None, 1)]
    assert ws.registry().show(MODEL, 'champion').version == 1
    assert decision(records, 'promotion')['decision'] == 'moved'


def test_cycle_on_the_next_window_gates_the_challenger(ws):
    from sklearn.metrics import roc_auc_score
    records, folder = ws.run('cycle', year=2017)
    assert ws.store.version('acs') == 2 and ws.store.version('acs_valid') == 1
    reg = ws.registry()
    assert reg.show(MODEL, 2).description.startswith('trained on acs@2 + acs_labels@2')
    gate = decision(records, 'promotion gate')
    champion = reg.show(MODEL, 'champion').version
    assert champion == (2 if gate['decision'] == 'passed' else 1)
    moved = [(r['alias'], r['old'], r['new']) for r in kinds(records, 'alias')]
    assert moved == [('challenger', None, 2)] + ([('champion', 1, 2)] if gate['decision'] == 'passed' else [])
    assert output(records, 'drift_report', folder).is_file() and output(records, 'model_card', folder).is_file()
    # the recorded numbers are the models' ROC AUC on the held-out rows of the new window (sklearn as the oracle)
    rows = ws.store.read('acs#2').join(ws.store.read('acs_labels').select('id', 'employed'), on='id').filter(pl.col('id') % 5 == 0)
    metrics = {r['name']: r['value'] for r in kinds(records, 'metric')}
    for role, version in (('champion', 1), ('challenger', 2)):
        m = reg.load(MODEL, version)
        assert np.isclose(metrics[f'roc_auc_{role}'], roc_auc_score(rows['employed'].to_numpy(), m.predict(rows.select(m.features))))


def test_audit_stores_its_verdict_and_the_promotion_can_require_it(ws, tmp_path):
    from fairlearn.metrics import MetricFrame, selection_rate
    from mlwork.models.audits import model_audits
    reg = ws.registry()
    champion = reg.show(MODEL, 'champion').version
    records, folder = ws.run('audit', n_boot=200, reweigh=False)
    verdict = decision(records, 'fairness audit')['decision']
    stored = model_audits(ws.ws, MODEL, champion)
    assert [a.verdict for a in stored] == [verdict] and stored[0].data == 'acs#2'
    # the disability gap of employment in ACS is far beyond 0.1: the default rules fail on DIS, with the whole interval
    rules = {(r['attribute'], r['rule'], r['kind']): r for r in stored[0].summary['rules']}
    assert verdict == 'failed' and rules[('DIS', 'demographic_parity', 'difference')]['status'] == 'failed'
    # the per-group selection rates are those of the champion's decisions on the held-out rows (fairlearn as the oracle)
    full = json.loads(output(records, 'audit', folder).read_text())
    rows = ws.store.read('acs#2').join(ws.store.read('acs_labels').select('id', 'employed'), on='id').filter(pl.col('id') % 5 == 0)
    m = reg.load(MODEL, champion)
    yhat = (m.predict(rows.select(m.features)) >= 0.5).astype(int)
    mf = MetricFrame(metrics=selection_rate, y_true=rows['employed'].to_numpy(), y_pred=yhat, sensitive_features=rows['RAC1P'].to_numpy())
    got = {r['group']: r['value'] for r in full['audits']['RAC1P']['by_group'] if r['metric'] == 'selection_rate' and r['attribute'] == 'RAC1P'}
    assert got.keys() == {f'RAC1P={g}' for g in mf.by_group.index} and all(np.isclose(got[f'RAC1P={g}'], v) for g, v in mf.by_group.items())
    # the promotion gate, asked to, refuses a version whose latest audit failed ...
    records, _ = ws.run('promote', candidate=str(champion), require_audit=True, dry_run=True)
    req = decision(records, 'fairness audit required')
    assert req['decision'] == 'refused' and "is 'failed'" in req['why']
    # ... and lets it through once an audit with the thresholds the user set has passed (the latest counts)
    records, _ = ws.run('audit', n_boot=200, reweigh=False, mitigate='', max_parity_difference=1.0, max_odds_difference=1.0,
                        min_impact_ratio=0.0)
    assert decision(records, 'fairness audit')['decision'] == 'passed' and len(model_audits(ws.ws, MODEL, champion)) == 2
    records, _ = ws.run('promote', candidate=str(champion), require_audit=True, dry_run=True)
    assert decision(records, 'fairness audit required')['decision'] == 'passed'
    # a dry run audits without storing
    ws.run('audit', n_boot=0, reweigh=False, mitigate='', dry_run=True)
    assert len(model_audits(ws.ws, MODEL, champion)) == 2
    # the model card lists both audits, newest first, with their reports
    from mlwork.cli.main import main
    assert main(['models', 'card', MODEL, str(champion), '--home', str(ws.ws.root), '--out', str(tmp_path / 'card')]) == 0
    md = (tmp_path / 'card' / 'model_card.md').read_text()
    section = md.split('## Fairness audits')[1].split('\n## ')[0]
    assert section.index('| passed |') < section.index('| failed |') and section.count('report.html') == 2


def test_audit_refuses_bad_parameters_and_stores_nothing(ws):
    from mlwork.models.audits import model_audits
    before = len(model_audits(ws.ws, MODEL))
    for params, says in (({'model': MODEL}, 'NAME@ALIAS or NAME@VERSION'), ({'sensitive': 'SEX,NOPE'}, "['NOPE']"),
                         ({'intersection': 'SEX'}, 'two or more')):
        with pytest.raises(PapermillExecutionError) as e:
            ws.run('audit', n_boot=0, reweigh=False, **params)
        assert says in str(e.value), (params, str(e.value)[-400:])
    assert len(model_audits(ws.ws, MODEL)) == before


def test_drift_of_a_named_version(ws):
    records, _ = ws.run('drift', current='acs@2')
    assert [(r['param'], r['version']) for r in kinds(records, 'input')] == [('reference', 0), ('current', 2)]
    assert 'acs#2 against acs@0' in decision(records, 'dataset alarm')['why']


def test_a_failing_cell_leaves_the_workspace_as_it_was(ws):
    before = ws.state()
    with pytest.raises(PapermillExecutionError, match='acs'):
        ws.run('drift', current='acs@99')
    with pytest.raises(PapermillExecutionError, match='alias'):
        ws.run('train', alias='bogus')
    with pytest.raises(PapermillExecutionError, match='refused'):  # the gate cannot pass with a margin of -1: the CI gate fails
        ws.run('promote', candidate='1' if before['models'][f'{MODEL}@2'] == ['champion'] else '2', margin=-1.0, n_boot=100,
               fail_if_refused=True)
    assert decision(ws.records, 'promotion')['decision'] == 'refused' and not kinds(ws.records, 'alias')
    assert ws.state() == before


def test_dry_run_cycle_writes_nothing(ws):
    from sklearn.metrics import log_loss
    from mlwork.datasets import load_acs, load_acs_labels
    before = ws.state()
    records, folder = ws.run('cycle', year=2018, dry_run=True, num_boost_round=10, n_boot=100, metric='log_loss')
    assert ws.state() == before and written(folder) == []
    assert decision(records, 'ingest acs')['decision'] == 'dry run: not stored'
    assert decision(records, 'promote')['decision'] == 'dry run: not moved'
    assert not kinds(records, 'alias') and not [r for r in kinds(records, 'model') if r['action'] == 'written']
    # log loss: lower is better, so the gate reads the challenger's gain as minus the difference (its lower end is -upper)
    metrics = {r['name']: r['value'] for r in kinds(records, 'metric')}
    rows = load_acs(2018, labels=False).join(load_acs_labels(2018).select('id', 'employed'), on='id').filter(pl.col('id') % 5 == 0)
    champion = ws.registry().load(MODEL, 'champion')
    assert np.isclose(metrics['log_loss_champion'], log_loss(rows['employed'].to_numpy(), champion.predict(rows.select(champion.features))))
    gate = decision(records, 'promotion gate')
    assert gate['decision'] == ('passed' if -metrics['log_loss_upper'] > -0.005 else 'refused')
    assert f"lower end of the gain {-metrics['log_loss_upper']:+.4f}" in gate['why']


def test_tour_runs_on_the_workspace(ws):
    _, folder = ws.run('tour')
    text = (folder / 'notebook.ipynb').read_text()
    assert 'acs_employment' in text and 'acs@2' in text
