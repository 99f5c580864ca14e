"""A pipeline failing at its riskiest cell leaves the workspace as it was: the kernel SIGKILLed inside a dataset write,
a model registration and an alias move (`MLWORK_KILL_AT`), and a cell that raises on a bad parameter."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import MLWORK, clean_env


def mlwork(ws: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(MLWORK), *args, '--home', str(ws)], cwd=ws.parent, env=clean_env(env), capture_output=True,
                       text=True, timeout=600, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def state(ws: Path, ready_only: bool = False) -> dict:
    "What a failed run must not change: dataset versions, the model versions and where the aliases point (read in process)."
    from mlwork.core import open_workspace
    from mlwork.data.store import DatasetStore
    from mlwork.models.registry import Registry
    w = open_workspace(ws)
    models = Registry(w).list().to_dict().get('acs_employment', [])   # opening the registry reconciles it
    store = DatasetStore.from_workspace(w)
    return {'acs': store.version('acs'), 'valid': store.version('acs_valid') if 'acs_valid' in store.list() else None,
            'models': [(m['version'], m['status'], sorted(m['aliases'])) for m in models if m['status'] == 'ready' or not ready_only]}


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp('faults') / 'ws'
    mlwork(ws, 'init')
    mlwork(ws, 'run', 'ingest', '--no-progress')
    mlwork(ws, 'run', 'ingest', '-p', 'year', '2016', '--no-progress')
    mlwork(ws, 'run', 'train', '-p', 'data', 'acs@0', '-p', 'labels', 'acs_labels@0', '-p', 'num_boost_round', '20', '--no-progress')
    mlwork(ws, 'run', 'promote', '-p', 'data', 'acs#0', '-p', 'labels', 'acs_labels#0', '--no-progress')     # the first champion
    mlwork(ws, 'run', 'train', '-p', 'num_boost_round', '25', '--no-progress')                            # the challenger
    return ws


@pytest.mark.parametrize('pipeline, args, kill_at', [
    ('ingest', ['-p', 'year', '2017'], 'writing'),                       # inside the Delta commit of a new version
    ('train', ['-p', 'num_boost_round', '20'], 'register.uploaded'),      # the model's files uploaded, not yet ready
    ('promote', ['-p', 'force', 'true'], 'promote.alias'),                # the alias moved, its audit entry not written
    ('validate', ['-p', 'batch', 'acs@1'], 'writing'),                    # storing the first of its valid/quarantine versions
])
def test_kernel_killed_mid_write_leaves_the_workspace_as_it_was(ws, pipeline, args, kill_at):
    before = state(ws)
    r = mlwork(ws, 'run', pipeline, *args, '--no-progress', '--json', env={'MLWORK_KILL_AT': kill_at}, check=False)
    assert r.returncode == 1, r.stderr
    man = json.loads(r.stdout)
    assert man['status'] == 'failed' and man['error']['ename'] in ('DeadKernelError', 'RuntimeError'), man['error']
    # reconciled on open: no new version ready, no alias moved, no dataset version half-written
    assert state(ws, ready_only=True) == before
    if pipeline == 'train':   # a registration killed before it was ready stays 'pending' (never servable) until repair
        assert [m[1] for m in state(ws)['models']][0] == 'pending'
        mlwork(ws, 'models', 'repair', '--older-than', '0', '--reason', 'the train run was killed')
    assert state(ws) == before
    assert mlwork(ws, 'doctor').returncode == 0                 # datasets, registry and audit log: nothing left behind


def test_a_cell_that_raises_changes_nothing(ws):
    before = state(ws)
    r = mlwork(ws, 'run', 'drift', '-p', 'current', 'acs@99', '--no-progress', '--json', check=False)
    assert r.returncode == 1
    man = json.loads(r.stdout)
    assert man['status'] == 'failed' and 'acs@99' in man['error']['evalue'] or '99' in man['error']['evalue']
    assert state(ws) == before
    # the failed runs are listed as failed, newest first
    runs = json.loads(mlwork(ws, 'runs', 'list', '--json').stdout)['runs']
    assert runs[0]['run_id'] == man['run_id'] and runs[0]['status'] == 'failed'


def test_rerun_reproduces_train_and_drift_from_their_manifests(ws):
    mlwork(ws, 'run', 'drift', '--no-progress')                                   # acs@latest is acs@1 now
    mlwork(ws, 'run', 'ingest', '-p', 'year', '2018', '--no-progress')           # ... and a later version now
    runs = json.loads(mlwork(ws, 'runs', 'list', '--json').stdout)['runs']
    for pipeline in ('drift', 'train'):
        original = next(m for m in runs if m['pipeline']['name'] == pipeline and m['status'] == 'succeeded')
        assert any(i['dataset'] == 'acs' and i['version'] == 1 for i in original['inputs'])
        r = mlwork(ws, 'rerun', original['run_id'], '--json', check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res['same'] and res['differences'] == []
        again = json.loads(mlwork(ws, 'runs', 'show', res['rerun'], '--json').stdout)
        assert again['rerun_of'] == original['run_id'] and again['metrics'] == original['metrics']
        assert {(i['dataset'], i['version']) for i in again['inputs']} == {(i['dataset'], i['version']) for i in original['inputs']}
        if pipeline == 'train':   # a dry run: nothing registered by reproducing it
            assert again['parameters']['dry_run'] is True and again['models']['written'] == []
