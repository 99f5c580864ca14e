"""Fault injection for the model registry: a real process SIGKILLed at every named step of register, promote,
rollback, unset_alias and delete (`MLWORK_KILL_AT`, the test hook of `mlwork.models.tracking.kill_point`); the next open, or
`repair`, leaves registry and audit log agreeing, no ready version unaudited or removed, nothing left behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import clean_env, run_mlwork
from mlwork.core import ConflictError, SignatureError, init_workspace
from mlwork.models.registry import (KILL_POINTS, TAG_AUDIT_ENTRIES, TAG_AUDIT_HEAD, TAG_AUDITED, TAG_INTENT, TAG_STATUS,
                                    Registry, compare_states, registry_state, replay_audit)
from mlwork.models.tracking import KILL_ENV, file_lock
from mlwork.models.train import train_model
from mlwork.synthetic import generate

FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months']

# A fork server: one process imports mlwork and MLflow once; each case is a real child process forked from it, which
# sets MLWORK_KILL_AT and runs one operation on the base state below until the kill point SIGKILLs it.
_SERVER = textwrap.dedent('''
    import json, os, sys
    import mlflow, mlflow.tracking, sqlalchemy                   # imported once, before any fork
    from mlwork.models.registry import Registry
    from mlwork.models.train import TrainedModel

    def run(root, op, model):
        reg = Registry(root)
        if op == 'register':
            reg.register(TrainedModel.load(model), 'credit', reason='killed')
        elif op == 'promote':
            reg.promote('credit', 3, reason='killed')
        elif op == 'rollback':
            reg.rollback('credit', reason='killed')
        elif op == 'unset_alias':
            reg.unset_alias('credit', 'challenger', reason='killed')
        elif op == 'delete':
            reg.delete('credit', 1, reason='killed')

    print('ready', flush=True)
    for line in sys.stdin:
        root, op, step, model = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ['MLWORK_KILL_AT'] = step
            try:
                run(root, op, model)
                os._exit(0)                                       # survived: the step was never reached
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(json.dumps(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)), flush=True)
''')


@pytest.fixture(scope='module')
def server():
    p = subprocess.Popen([sys.executable, '-c', _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=clean_env())
    assert p.stdout.readline().strip() == 'ready'
    def run(root: Path, op: str, step: str, model: Path) -> int:
        p.stdin.write(json.dumps([str(root), op, step, str(model)]) + '\n'); p.stdin.flush()
        return json.loads(p.stdout.readline())
    yield run
    p.stdin.close(); p.wait(timeout=60)


@pytest.fixture(scope='module')
def models():
    data = generate('credit', n_rows=400, seed=1).frame
    return [train_model(data, 'repaid', features=FEATURES, num_boost_round=5, early_stopping_rounds=None, seed=s) for s in range(4)]


def _build(root: Path, models) -> Path:
    "A workspace with credit v1..v3: champion 2 (history [1, 2]), challenger 3."
    reg = Registry(init_workspace(root).workspace)
    for m in models[:3]:
        reg.register(m, 'credit', reason='base')
    reg.promote('credit', 1); reg.promote('credit', 2); reg.promote('credit', 3, 'challenger')
    return root


@pytest.fixture(scope='module')
def base(tmp_path_factory, models):
    """The base workspace (copied for each case) and a small model file to register as version 4."""
    root = tmp_path_factory.mktemp('base')
    return _build(root / 'ws', models), models[3].save(root / 'model4.json')


def _kill(server, base, tmp: Path | None, op: str, step: str) -> Path:
    "A copy of the base workspace (or, with `tmp` None, the base itself) in which a process doing `op` was SIGKILLed at `step`."
    root, model = base
    ws = root if tmp is None else tmp / f'{step}'
    if tmp is not None:
        shutil.copytree(root, ws)
    assert server(ws, op, step, model) == -signal.SIGKILL, step
    return ws


def _agree(reg: Registry) -> None:
    "Registry and audit log agree; no intent left; every ready version audited; the log intact and anchored."
    assert compare_states(registry_state(reg), replay_audit(reg.audit)) == []
    rm = reg._client.get_registered_model('credit')
    assert TAG_INTENT not in rm.tags
    for mv in reg._client.search_model_versions("name='credit'"):
        if mv.tags.get(TAG_STATUS) == 'ready':
            assert TAG_AUDITED in mv.tags, (mv.version, mv.tags)
    v = reg.audit.verify()
    assert v.ok, v
    assert int(rm.tags[TAG_AUDIT_ENTRIES]) <= v.entries


# what each kill leaves once reconciled: (champion, challenger, ready versions, champion history)
_BEFORE = (2, 3, [1, 2, 3], [1, 2])
_EXPECTED = {
    'promote': lambda step: (3, None, [1, 2, 3], [1, 2, 3]) if step in ('promote.audited', 'promote.done') else _BEFORE,
    'rollback': lambda step: (1, 3, [1, 2, 3], [1]) if step in ('rollback.audited', 'rollback.done') else _BEFORE,
    'unset_alias': lambda step: (2, None, [1, 2, 3], [1, 2]) if step in ('unset_alias.audited', 'unset_alias.done') else _BEFORE,
    'delete': lambda step: (2, 3, [2, 3], [2]) if step != 'delete.intent' else _BEFORE,
    'register': lambda step: (2, 3, [1, 2, 3, 4] if step in ('register.ready', 'register.audited', 'register.marked',
                                                             'register.finished') else [1, 2, 3], [1, 2]),
}


def _state(reg: Registry) -> tuple:
    rm = reg._client.get_registered_model('credit')
    ready = sorted(int(v.version) for v in reg._client.search_model_versions("name='credit'") if v.tags.get(TAG_STATUS) == 'ready')
    return (int(rm.aliases['champion']), int(rm.aliases['challenger']) if 'challenger' in rm.aliases else None, ready,
            reg.history('credit'))


@pytest.mark.parametrize('op', sorted(KILL_POINTS))
def test_sigkill_at_every_step_is_reconciled_by_the_next_open(server, base, tmp_path, op):
    for step in KILL_POINTS[op]:
        ws = _kill(server, base, tmp_path, op, step)                     # a real process, killed at this step
        reg = Registry(ws)                                               # the next open reconciles
        reg.list()
        _agree(reg)
        assert _state(reg) == _EXPECTED[op](step), step
        assert not any((ws / 'tmp').glob('*')) if (ws / 'tmp').exists() else True   # a killed staging folder is gone
        recovered = [json.loads(w) for w in reg.audit.entries()['what']]
        if step == 'register.ready':                                      # killed between `ready` and its entry: recovered
            assert recovered[-1]['recovered'] is True and recovered[-1]['version'] == 4
        if op in ('promote', 'rollback', 'unset_alias') and step in (f'{op}.alias', f'{op}.history'):
            match = {'promote': {'version': 3, 'alias': 'champion'}, 'rollback': {'alias': 'champion', 'to_version': 1},
                     'unset_alias': {'alias': 'challenger'}}[op]
            assert recovered[-1] == {'model': 'credit', 'undone': op, 'recovered': True, **match}
        if op == 'unset_alias':                                           # the challenger history moves with the alias
            assert reg.history('credit', 'challenger') == ([] if _state(reg)[1] is None else [3]), step
        ready = _state(reg)[2]
        done = reg.repair(older_than=0, reason='after a crash', user='ops')   # what is left: pending versions, orphan runs
        assert done.differences == [] and _state(reg)[2] == ready, step       # repair never removes a ready version
        assert all(r['version'] not in ready for r in done.removed)
        assert reg._client.search_runs([reg._experiment()], filter_string="attributes.status = 'RUNNING'") == []
        assert all(v.status == 'ready' for v in reg.list().models['credit'])
        for v in ready:                                                    # every ready version verifies and is promotable
            assert reg.verify('credit', v).ok
        if 4 in ready:
            assert reg.promote('credit', 4, 'challenger', reason='after recovery').aliases == ['challenger']
        _agree(reg)


def test_a_version_whose_registration_is_not_audited_is_not_promotable(server, base, tmp_path):
    ws = _kill(server, base, tmp_path, 'register', 'register.ready')
    reg = Registry(ws)
    with file_lock(reg, 'aliases-credit', 'holding the model'):          # a live holder: the open leaves the model alone
        fresh = Registry(ws)
        assert fresh.show('credit', 4).status == 'ready'
        with pytest.raises(ConflictError, match=r"version 4 cannot be promoted: its registration is not in the audit log"):
            fresh.promote('credit', 4)
    rec = Registry(ws).reconcile()                                      # once free: recorded as recovered
    assert rec.ok and [a['done'] for a in rec.actions] == ['recovered']
    assert Registry(ws).promote('credit', 4).aliases == ['champion']


def test_repair_keeps_a_ready_version_whose_run_was_left_running_and_the_registry_survives_gc(server, base, models, tmp_path):
    # a workspace of its own, not a copy: `mlflow gc` follows MLflow's absolute artifact paths (a copy's would reach the original)
    ws = _kill(server, (_build(tmp_path / 'ws', models), base[1]), None, 'register', 'register.marked')  # ready, audited, run RUNNING
    home = ['--home', str(ws)]
    rep = run_mlwork('models', 'repair', '--older-than', '0', '--reason', 'after a crash', '--json', *home, cwd=tmp_path)
    assert rep.code == 0, rep.err
    d = rep.json()
    assert d['removed'] == [] and d['differences'] == [] and {'model': 'credit', 'what': 'run', 'version': 4, 'done': 'finished'} in d['reconciled']
    reg = Registry(ws)
    run = reg._client.get_run(reg.show('credit', 4).run_id)
    assert (run.info.status, run.info.lifecycle_stage) == ('FINISHED', 'active')
    # MLflow's own garbage collection after a deletion, and after a run removed under a version (the old repair's bug)
    reg.delete('credit', 1, reason='superseded')
    reg._client.delete_run(reg.show('credit', 2).run_id)
    uri = f"sqlite:///{ws / 'models' / 'mlflow.db'}"
    gc = subprocess.run([str(Path(sys.executable).parent / 'mlflow'), 'gc', '--backend-store-uri', uri],
                        capture_output=True, text=True, timeout=300, env=clean_env({'MLFLOW_TRACKING_URI': uri}))
    assert gc.returncode == 0, gc.stderr[-2000:]
    listed = run_mlwork('models', 'list', '--json', *home, cwd=tmp_path)
    assert listed.code == 0 and [v['version'] for v in listed.json()['credit']] == [4, 3, 2], listed.err
    shown = run_mlwork('models', 'show', 'credit', '2', '--json', *home, cwd=tmp_path)
    assert shown.code == 0 and shown.json()['metrics'] == {}, shown.err      # its run is gone; the version still answers
    reg = Registry(ws)
    assert reg.verify('credit', 4).ok and reg.verify('credit', 3).ok
    with pytest.raises(SignatureError, match='version 2 failed verification'):    # its artifacts went with its run
        reg.verify('credit', 2)


def test_anchors_follow_every_audited_change(base, tmp_path):
    ws = tmp_path / 'ws'
    shutil.copytree(base[0], ws)
    reg = Registry(ws)
    reg.rollback('credit', reason='drill')
    rm = reg._client.get_registered_model('credit')
    assert (rm.tags[TAG_AUDIT_HEAD], int(rm.tags[TAG_AUDIT_ENTRIES])) == (reg.audit.head(), len(reg.audit))
    import mlwork.audit
    if not hasattr(mlwork.audit, 'Anchor'):
        pytest.skip('mlwork.audit.Anchor is not there yet')
    anchors = reg.audit_anchors()
    assert [(a.head, a.entries, a.source) for a in anchors] == [(reg.audit.head(), len(reg.audit), 'registry:credit')]


def test_kill_points_fire_only_at_their_step(server, base, tmp_path):
    ws = tmp_path / 'ws'
    shutil.copytree(base[0], ws)
    assert server(ws, 'rollback', 'promote.audited', base[1]) == 0       # another operation's step: never reached
    assert Registry(ws).show('credit').version == 1 and os.environ.get(KILL_ENV) is None
