"""Model registry: round trips, signatures and tampering, aliases and rollback, audit, locked database,
concurrent registration from processes, and failures in the middle of a registration."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlwork.core import ConflictError, InvalidParameter, NotFound, SignatureError, init_workspace
from mlwork.models.artifacts import MANIFEST_FILE, MODEL_FILE
from mlwork.models.registry import ALIASES, Registry
from mlwork.models.tracking import ARTIFACT_PATH, default_tracking_uri
from mlwork.security import keys_dir, sidecar_path
from mlwork.synthetic import generate
from mlwork.models.train import TrainedModel, train_model

FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months', 'loan_amount', 'loan_purpose']


@pytest.fixture(scope='module')
def data():
    return generate('credit', n_rows=1_500, seed=3).frame


@pytest.fixture(scope='module')
def models(data):
    "Three different small models."
    return [train_model(data, 'repaid', features=FEATURES[:k], num_boost_round=r, early_stopping_rounds=None, seed=s)
            for k, r, s in ((4, 10, 0), (6, 20, 1), (6, 30, 2))]


@pytest.fixture(scope='module')
def empty_db(tmp_path_factory):
    "An MLflow sqlite database with the current schema, made once (MLflow's migrations take seconds)."
    ws = init_workspace(tmp_path_factory.mktemp('template') / 'ws').workspace
    Registry(ws)._client.search_registered_models()
    return ws.path('models') / 'mlflow.db'


def _workspace(root: Path, empty_db: Path):
    ws = init_workspace(root).workspace
    shutil.copy(empty_db, ws.path('models') / 'mlflow.db')
    return ws


@pytest.fixture
def reg(tmp_path, empty_db):
    return Registry(_workspace(tmp_path / 'ws', empty_db))


def _stored(reg: Registry, name: str, version: int) -> Path:
    "The artifact folder of a version in the local artifact store."
    mv = reg.show(name, version)
    uri = reg._client.get_run(mv.run_id).info.artifact_uri
    return Path(uri.removeprefix('file://')) / ARTIFACT_PATH


def test_round_trip_identical_and_timed(reg, models, data, capfd):
    m = models[1]
    v1 = reg.register(models[0], 'credit', metrics={'auc': 0.71}, reason='first', user='ann')   # warms the process
    t = time.perf_counter()
    v = reg.register(m, 'credit', metrics={'auc': 0.74, 'brier': 0.18}, description='six features', user='ann',
                     reason='retrain', card={'owner': 'risk'}, tags={'team': 'risk'})
    t_reg = time.perf_counter() - t
    t = time.perf_counter()
    back = reg.load('credit', v.version)
    t_load = time.perf_counter() - t
    assert (v1.version, v.version, v.status) == (1, 2, 'ready')
    assert back.model_text() == m.model_text()                           # byte-identical LightGBM text
    x = data.select(m.features)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    assert back.lineage.to_dict() == m.lineage.to_dict()
    shown = reg.show('credit', 2)
    assert shown.metrics == {'auc': 0.74, 'brier': 0.18} and shown.tags == {'team': 'risk'}
    assert shown.params['data.content_hash'] == m.lineage.data['content_hash'] and shown.params['lgb.seed'] == '1'
    assert shown.key_id.startswith('ed25519:') and shown.description == 'six features'
    assert reg.card('credit', 2) == {'owner': 'risk'} and reg.card('credit', 1) == {}
    run = reg._client.get_run(shown.run_id)
    assert run.info.status == 'FINISHED'
    ds = run.inputs.dataset_inputs[0].dataset                           # lineage as an MLflow dataset input
    assert ds.digest == m.lineage.data['content_hash'][:32] and json.loads(ds.source)['content_hash'] == m.lineage.data['content_hash']
    listing = reg.list()
    assert [x.version for x in listing.models['credit']] == [2, 1] and listing.frame.height == 2
    assert 'credit' in listing._repr_html_() and json.dumps(listing.to_dict()) and shown._repr_html_()
    # every artifact is signed, the manifest lists them all, and no key material is in the artifact store
    files = sorted(p.name for p in _stored(reg, 'credit', 2).iterdir())
    assert files == sorted(['card.json', 'lineage.json', 'manifest.json', 'metrics.json', 'model.json',
                            *(f + '.sig' for f in ('card.json', 'lineage.json', 'manifest.json', 'metrics.json', 'model.json'))])
    secret = (keys_dir(reg.workspace) / 'signing.key').read_text()
    body = secret.strip().splitlines()[1]
    store = reg.workspace.path('models') / 'artifacts'
    assert not any(body in p.read_text(errors='ignore') or 'PRIVATE' in p.read_text(errors='ignore') for p in store.rglob('*') if p.is_file())
    assert reg.verify('credit', 2).files.keys() == {'card.json', 'lineage.json', 'metrics.json', 'model.json'}
    err = capfd.readouterr().err
    assert 'Downloading artifacts' not in err and 'INFO mlflow' not in err
    with capfd.disabled():
        print(f'\nregister {t_reg * 1000:.0f} ms, load (with signature verification) {t_load * 1000:.0f} ms, '
              f'together {(t_reg + t_load) * 1000:.0f} ms (warm process)')


def test_open_by_root_and_any_tracking_uri(tmp_path, empty_db, models):
    ws = _workspace(tmp_path / 'ws', empty_db)
    other = tmp_path / 'elsewhere'; other.mkdir()
    shutil.copy(empty_db, other / 'server.db')
    r = Registry(str(ws.root), tracking_uri=f'sqlite:///{other}/server.db', artifact_location=(other / 'art').as_uri())
    r.register(models[0], 'm')
    assert (other / 'art').is_dir() and r.load('m', 1).model_text() == models[0].model_text()
    assert Registry(ws.root).list().models == {}                     # the workspace's own registry is separate
    assert default_tracking_uri(ws).startswith(f"sqlite:///{ws.path('models')}/mlflow.db")
    with pytest.raises(InvalidParameter, match="'tracking_uri' parameter of Registry"):
        Registry(ws, tracking_uri='')
    with pytest.raises(NotFound, match='No mlwork workspace'):
        Registry(tmp_path / 'nope')


def test_tampering_is_refused_naming_model_and_version(reg, models):
    for m in models[:3]:
        reg.register(m, 'credit')
    reg.promote('credit', 1)
    folder2, folder3 = _stored(reg, 'credit', 2), _stored(reg, 'credit', 3)
    model2 = folder2 / MODEL_FILE
    good = model2.read_bytes()
    raw = bytearray(good); raw[len(raw) // 2] ^= 0x01
    model2.write_bytes(bytes(raw))                                    # one flipped bit
    with pytest.raises(SignatureError, match=r"Model 'credit' version 2 failed verification.*changed after signing"):
        reg.load('credit', 2)
    with pytest.raises(SignatureError, match="version 2"):
        reg.promote('credit', 2, reason='looks fine')
    assert reg.show('credit', 'champion').version == 1 and reg.history('credit') == [1]   # nothing changed
    model2.write_bytes(good[:-100])                                   # truncated
    with pytest.raises(SignatureError, match=r"version 2.*truncated after signing"):
        reg.load('credit', 2)
    model2.write_bytes(good)
    assert reg.load('credit', 2).model_text() == models[1].model_text()   # restored bytes verify again
    sig = sidecar_path(model2).read_bytes()
    sidecar_path(model2).unlink()                                      # missing signature
    with pytest.raises(SignatureError, match=r"Model 'credit' version 2 .*is not signed"):
        reg.load('credit', 2)
    sidecar_path(model2).write_bytes(sig)
    # version 3's files copied over version 2's: validly signed, but for another version
    for f in folder3.iterdir():
        shutil.copy(f, folder2 / f.name)
    with pytest.raises(SignatureError, match=r"Model 'credit' version 2 failed verification.*version"):
        reg.load('credit', 2)
    # an extra, unsigned file beside a good version
    (folder3 / 'extra.json').write_text('{}')
    with pytest.raises(SignatureError, match=r"version 3 .*not in the signed manifest"):
        reg.verify('credit', 3)
    (folder3 / 'extra.json').unlink()
    manifest = folder3 / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"size"', '"size" ', 1))   # edited manifest
    with pytest.raises(SignatureError, match=r"version 3"):
        reg.load('credit', 3)
    assert reg.load('credit', 'champion').model_text() == models[0].model_text()
    # rolling back to a tampered champion is refused too; the alias stays where it was
    model1 = _stored(reg, 'credit', 1) / MODEL_FILE
    reg.register(models[2], 'credit')
    reg.promote('credit', 4)
    model1.write_bytes(model1.read_bytes().replace(b'leaf_value=', b'leaf_value=1', 1))
    with pytest.raises(SignatureError, match=r"Model 'credit' version 1 failed verification.*extended after signing"):
        reg.rollback('credit', reason='incident')
    assert reg.show('credit', 'champion').version == 4 and reg.history('credit') == [1, 4]


def test_promote_and_rollback(reg, models):
    for m in models:
        reg.register(m, 'credit')
    with pytest.raises(NotFound, match="alias was never set"):
        reg.rollback('credit')
    reg.promote('credit', 1, reason='first release', user='bob')
    with pytest.raises(ConflictError, match='version 1 is the first champion on record'):
        reg.rollback('credit')
    reg.promote('credit', 2)
    reg.promote('credit', 3, 'challenger')
    v = reg.promote('credit', 'challenger', reason='canary passed')       # challenger → champion
    assert (v.version, v.aliases) == (3, ['champion'])
    assert reg.promote('credit', 3).version == 3                            # already champion: no change
    assert reg.history('credit') == [1, 2, 3] and reg.history('credit', 'challenger') == [3]
    with pytest.raises(NotFound, match=r"has no alias 'challenger'; versions: 1, 2, 3; aliases: champion→3"):
        reg.show('credit', 'challenger')
    assert reg.rollback('credit', reason='complaints').version == 2
    assert reg.load('credit').model_text() == models[1].model_text()
    assert reg.rollback('credit', reason='still bad').version == 1          # a second rollback goes further back
    assert reg.history('credit') == [1]
    with pytest.raises(ConflictError, match='nothing|no earlier champion'):
        reg.rollback('credit')
    reg.promote('credit', 3)
    assert reg.history('credit') == [1, 3] and reg.rollback('credit').version == 1
    with pytest.raises(InvalidParameter, match="'alias' parameter of Registry.promote must be one of 'champion', 'challenger'"):
        reg.promote('credit', 1, 'production')
    assert ALIASES == ('champion', 'challenger')
    cmp = reg.compare('credit', 1, 3)
    assert 'num_boost_round' in cmp.lineage_diff['key'].to_list() and cmp._repr_html_() and json.dumps(cmp.to_dict())
    assert reg.verify('credit', 'champion')._repr_html_() and reg._repr_html_() and reg.to_dict()['models'] == {'credit': [3, 2, 1]}


def test_not_found_names_what_exists(reg, models):
    with pytest.raises(NotFound, match=r"No registered model 'credit'; registered models: none yet"):
        reg.load('credit')
    reg.register(models[0], 'credit')
    reg.register(models[1], 'fraud')
    with pytest.raises(NotFound, match=r"No registered model 'credt'; registered models: 'credit', 'fraud'"):
        reg.show('credt', 1)
    with pytest.raises(NotFound, match=r"Model 'credit' has no version 5; versions: 1; aliases: none"):
        reg.load('credit', 5)
    with pytest.raises(NotFound, match=r"Model 'credit' has no alias 'champion'; versions: 1"):
        reg.load('credit', 'champion')
    with pytest.raises(InvalidParameter, match="'model' parameter of Registry.register must be a TrainedModel"):
        reg.register('model.json', 'credit')
    with pytest.raises(InvalidParameter, match=r"'metrics' parameter of Registry.register must be a dict of finite numbers \(metric 'auc' is not\)"):
        reg.register(models[0], 'credit', metrics={'auc': float('nan')})
    with pytest.raises(InvalidParameter, match="'name' parameter of Registry.register"):
        reg.register(models[0], 'credit risk')
    assert [v.version for v in reg.list().models['credit']] == [1]     # refused calls registered nothing


def test_delete_and_audit_trail(reg, models):
    for m in models:
        reg.register(m, 'credit', user='ann', reason='train')
    reg.promote('credit', 1, user='bob', reason='release')
    reg.promote('credit', 2, user='bob', reason='better')
    with pytest.raises(ConflictError, match="Cannot delete credit version 2: it is the champion"):
        reg.delete('credit', 2, reason='x')
    with pytest.raises(InvalidParameter, match="'reason' parameter of Registry.delete"):
        reg.delete('credit', 1, reason='')
    gone = reg.delete('credit', 1, reason='superseded', user='carol')
    assert gone.status == 'deleted'
    assert [v.version for v in reg.list().models['credit']] == [3, 2] and reg.history('credit') == [2]
    with pytest.raises(NotFound, match='has no version 1; versions: 2, 3'):
        reg.load('credit', 1)
    with pytest.raises(ConflictError, match='first champion on record'):  # the deleted version is not rolled back to
        reg.rollback('credit')
    assert reg.load('credit', 3).model_text() == models[2].model_text()
    log = reg.audit
    assert log.verify().ok
    e = log.entries()
    assert e['action'].to_list() == ['model.register'] * 3 + ['model.promote'] * 2 + ['model.delete']
    assert e['who'].to_list() == ['ann'] * 3 + ['bob', 'bob', 'carol']
    assert e['why'].to_list()[-1] == 'superseded'
    what = [json.loads(w) for w in e['what']]
    assert what[4] == {'model': 'credit', 'version': 2, 'alias': 'champion', 'previous': 1, 'changed': True, 'also': []}
    assert (what[2]['version'], what[2]['manifest_sha256']) == (3, reg.show('credit', 3).manifest_sha256)
    assert what[5] == {'model': 'credit', 'version': 1, 'run_id': gone.run_id, 'manifest_sha256': gone.manifest_sha256}


@pytest.mark.parametrize('fault', ['sign', 'upload'])
def test_failure_mid_registration_leaves_nothing(reg, models, monkeypatch, fault):
    reg.register(models[0], 'credit')
    reg.promote('credit', 1)
    calls = []
    if fault == 'sign':
        real = Registry._sign
        def bad(self, path, *a, **k):
            calls.append(path)
            if len(calls) == 3:
                raise OSError('disk full while signing')
            return real(self, path, *a, **k)
        monkeypatch.setattr(Registry, '_sign', bad)
    else:
        def bad(self, run_id, folder):
            raise OSError('artifact store unreachable')
        monkeypatch.setattr(Registry, '_log_artifacts', bad)
    before_audit = len(reg.audit)
    with pytest.raises(OSError, match='disk full|unreachable'):
        reg.register(models[1], 'credit')
    monkeypatch.undo()
    assert [v.version for v in reg.list().models['credit']] == [1]       # no dangling version
    runs = reg._client.search_runs([reg._experiment()], run_view_type=3)  # ALL: active and deleted
    failed = [r for r in runs if r.info.run_id != reg.show('credit', 1).run_id]
    assert len(failed) == 1 and failed[0].info.status == 'FAILED' and failed[0].info.lifecycle_stage == 'deleted'
    active = reg._client.search_runs([reg._experiment()])
    assert [r.info.status for r in active] == ['FINISHED']                # no orphan run marked finished
    assert len(reg.audit) == before_audit                                # nothing audited for a failed registration
    assert reg.load('credit', 'champion').model_text() == models[0].model_text()
    v = reg.register(models[1], 'credit')                                # the registry still works
    assert v.version == 3                                                # the failed version's number is not reused
    assert reg.load('credit', v.version).model_text() == models[1].model_text()


_HOLD_LOCK = textwrap.dedent('''
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute('BEGIN EXCLUSIVE')
    print('locked', flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute('COMMIT')
''')


def _hold(db: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'locked'
    return p


def test_locked_database_retries_then_conflict(tmp_path, empty_db, models):
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws, lock_timeout=1.5)
    reg.register(models[0], 'credit')
    db = ws.path('models') / 'mlflow.db'
    holder = _hold(db, 6)
    try:
        t = time.perf_counter()
        with pytest.raises(ConflictError, match=r'is locked by another process: .* gave up after .* s of retries'):
            reg.register(models[1], 'credit')
        waited = time.perf_counter() - t
        with pytest.raises(ConflictError, match='locked by another process'):
            reg.load('credit', 1)
    finally:
        holder.wait(timeout=30)
    assert 1.0 < waited < 8
    assert [v.version for v in reg.list().models['credit']] == [1]
    # a lock released while we retry: the call waits and succeeds
    holder = _hold(db, 1.5)
    try:
        v = Registry(ws, lock_timeout=20).register(models[1], 'credit')
    finally:
        holder.wait(timeout=30)
    assert v.version == 2 and reg.load('credit', 2).model_text() == models[1].model_text()


_REGISTER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from mlwork.models.registry import Registry
    from mlwork.models.train import TrainedModel
    root, model, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    reg = Registry(root)
    reg._client; reg._experiment()
    m = TrainedModel.load(model)
    print('ready', flush=True)
    while not go.exists():
        time.sleep(0.01)
    print(' '.join(str(reg.register(m, 'credit', user=sys.argv[4]).version) for _ in range(2)), flush=True)
''')


def test_concurrent_registration_from_two_processes(tmp_path, empty_db, models):
    ws = _workspace(tmp_path / 'ws', empty_db)
    model = models[0].save(tmp_path / 'model.json')
    go = tmp_path / 'go'
    procs = [subprocess.Popen([sys.executable, '-c', _REGISTER, str(ws.root), str(model), str(go), f'proc{i}'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == 'ready', p.stderr.read()
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    versions = sorted(int(v) for out, _ in outs for v in out.split())
    assert versions == [1, 2, 3, 4]
    reg = Registry(ws)
    assert [v.version for v in reg.list().models['credit']] == [4, 3, 2, 1]
    for v in versions:
        assert reg.verify('credit', v).ok
    assert reg.audit.verify().ok and len(reg.audit) == 4
    assert sorted(reg.audit.entries()['who'].to_list()) == ['proc0', 'proc0', 'proc1', 'proc1']


def test_encryption_at_rest(tmp_path, empty_db, models, data, monkeypatch):
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws, encrypt=True)
    m = models[1]
    v = reg.register(m, 'credit', metrics={'auc': 0.74}, card={'owner': 'risk'}, reason='encrypted at rest')
    stored = _stored(reg, 'credit', v.version)
    names = sorted(p.name for p in stored.iterdir())
    assert 'model.json.enc' in names and 'model.json' not in names and 'lineage.json' not in names, names
    blob = b''.join(p.read_bytes() for p in stored.iterdir() if p.name.endswith('.enc'))
    assert b'tree_sizes' not in blob and b'debt_ratio' not in blob          # no model text or feature names in the clear
    loaded = reg.load('credit', v.version)
    assert loaded.model_text() == m.model_text()
    np.testing.assert_array_equal(loaded.predict(data.select(m.features)), m.predict(data.select(m.features)))
    assert reg.verify('credit', v.version).ok and reg.card('credit', v.version) == {'owner': 'risk'}
    assert reg.audit.verify().ok and json.loads(reg.audit.path.read_text().splitlines()[-1])['what']['encrypted'].startswith('aes256:')
    # another data key (as on a machine without this workspace's key): refused, naming the model and version
    monkeypatch.setenv('MLWORK_DATA_KEY', 'A' * 43 + '=')
    with pytest.raises(SignatureError, match=r"Model 'credit' version 1 failed verification: .*cannot be decrypted"):
        reg.load('credit', v.version)
    monkeypatch.delenv('MLWORK_DATA_KEY')
    # a changed byte in the ciphertext: refused
    enc = stored / 'model.json.enc'
    b = bytearray(enc.read_bytes()); b[-5] ^= 1; enc.write_bytes(bytes(b))
    with pytest.raises(SignatureError, match=r"version 1 failed verification"):
        reg.load('credit', v.version)
    with pytest.raises(InvalidParameter, match='encrypt'):
        Registry(ws, encrypt='yes')


def _failing_audit(monkeypatch):
    from mlwork.audit import AuditLog
    def full(self, *a, **k):
        raise OSError('No space left on device')
    monkeypatch.setattr(AuditLog, 'append', full)


def test_alias_changes_are_undone_when_their_audit_entry_cannot_be_written(reg, models, monkeypatch):
    for m in models:
        reg.register(m, 'credit')
    reg.promote('credit', 1)
    reg.promote('credit', 2, alias='challenger')
    reg.promote('credit', 3)
    before = (reg.show('credit', 'champion').version, reg.show('credit', 'challenger').version,
              reg.history('credit'), reg.history('credit', 'challenger'), len(reg.audit))
    _failing_audit(monkeypatch)
    # promoting the challenger to champion also removes its challenger alias: both are put back
    with pytest.raises(ConflictError, match=r'promote of credit undone: its audit entry could not be written \(OSError: No space'):
        reg.promote('credit', 'challenger')
    with pytest.raises(ConflictError, match='rollback of credit undone'):
        reg.rollback('credit')
    monkeypatch.undo()
    after = (reg.show('credit', 'champion').version, reg.show('credit', 'challenger').version,
             reg.history('credit'), reg.history('credit', 'challenger'), len(reg.audit))
    assert after == before == (3, 2, [1, 3], [2], 6)
    assert reg.audit.verify().ok
    reg.rollback('credit')  # and the registry still works: the rollback goes where it would have gone
    assert reg.show('credit', 'champion').version == 1 and reg.audit.entries()['action'].to_list()[-1] == 'model.rollback'


def test_a_deletion_is_audited_before_it_happens_and_a_failure_after_it(reg, models, monkeypatch):
    reg.register(models[0], 'credit'); reg.register(models[1], 'credit')
    client = reg._client
    def broken(*a, **k):
        raise OSError('database is read-only')
    monkeypatch.setattr(client, 'delete_model_version', broken)
    with pytest.raises(Exception, match='read-only'):
        reg.delete('credit', 1, reason='superseded')
    monkeypatch.undo()
    e = reg.audit.entries()
    assert e['action'].to_list()[-2:] == ['model.delete', 'model.delete_failed']
    assert 'failed' in e['why'].to_list()[-1] and [v.version for v in reg.list().models['credit']] == [2, 1]
    assert reg.load('credit', 1).model_text() == models[0].model_text()  # nothing lost


_KILLED = textwrap.dedent('''
    import sys, time
    from mlwork.models.registry import Registry
    from mlwork.models.train import TrainedModel
    def hang(self, run_id, folder):
        print('uploading', flush=True)
        time.sleep(120)
    Registry._log_artifacts = hang
    Registry(sys.argv[1]).register(TrainedModel.load(sys.argv[2]), 'credit')
''')


_KILLED_EARLY = textwrap.dedent('''
    import sys, time
    from mlflow.tracking import MlflowClient
    from mlwork.models.registry import Registry
    from mlwork.models.train import TrainedModel
    def hang(self, *a, **k):
        print('uploading', flush=True)
        time.sleep(120)
    MlflowClient.create_model_version = hang
    Registry(sys.argv[1]).register(TrainedModel.load(sys.argv[2]), 'credit')
''')


def test_repair_removes_the_run_of_a_registration_killed_before_its_version(tmp_path, empty_db, models):
    import signal
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws)
    reg.register(models[0], 'credit')
    p = subprocess.Popen([sys.executable, '-c', _KILLED_EARLY, str(ws.root), str(models[1].save(tmp_path / 'm.json'))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'uploading', p.stderr.read()
    p.send_signal(signal.SIGKILL); p.wait(timeout=30)
    assert [v.version for v in reg.list().models['credit']] == [1]      # no version was reserved
    orphan = reg._client.search_runs([reg._experiment()], filter_string="attributes.status = 'RUNNING'")
    done = reg.repair('credit', older_than=0, reason='after a crash')
    assert [(r['version'], r['run_id']) for r in done.removed] == [(None, orphan[0].info.run_id)]
    assert reg._client.get_run(orphan[0].info.run_id).info.status == 'FAILED'
    assert reg.verify('credit', 1).ok


def test_repair_removes_what_a_killed_registration_left(tmp_path, empty_db, models):
    import signal
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws)
    reg.register(models[0], 'credit'); reg.promote('credit', 1)
    p = subprocess.Popen([sys.executable, '-c', _KILLED, str(ws.root), str(models[1].save(tmp_path / 'm.json'))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'uploading', p.stderr.read()
    p.send_signal(signal.SIGKILL); p.wait(timeout=30)                   # killed mid-registration: no cleanup ran
    assert {v.version: v.status for v in reg.list().models['credit']} == {2: 'pending', 1: 'ready'}
    running = reg._client.search_runs([reg._experiment()], filter_string="attributes.status = 'RUNNING'")
    assert len(running) == 1
    with pytest.raises(InvalidParameter, match="'reason' parameter of Registry.repair"):
        reg.repair(reason=' ')
    with pytest.raises(InvalidParameter, match="'older_than' parameter of Registry.repair"):
        reg.repair(reason='x', older_than=-1)
    with pytest.raises(NotFound):
        reg.repair('nope', reason='x')
    young = reg.repair(reason='after a crash')                           # 10 minutes by default: may still be registering
    assert young.removed == [] and [s['version'] for s in young.skipped] == [2] and 'still be registering' in young.skipped[0]['why']
    dry = reg.repair(older_than=0, reason='after a crash', dry_run=True)
    assert [r['version'] for r in dry.removed] == [2] and reg.show('credit', 2).status == 'pending'
    audited = len(reg.audit)
    done = reg.repair(older_than=0, reason='after a crash', user='ops')
    assert [(r['model'], r['version'], r['run_id']) for r in done.removed] == [('credit', 2, running[0].info.run_id)]
    assert [v.version for v in reg.list().models['credit']] == [1]
    assert reg._client.search_runs([reg._experiment()], filter_string="attributes.status = 'RUNNING'") == []
    e = reg.audit.entries()
    assert len(e) == audited + 1 and e['action'][-1] == 'model.repair' and e['who'][-1] == 'ops' and reg.audit.verify().ok
    assert reg.repair(older_than=0, reason='again').removed == []          # idempotent
    assert reg.register(models[1], 'credit').version == 3                   # the registry works on; champion untouched
    assert reg.load('credit', 'champion').model_text() == models[0].model_text()


_LIST_WITHOUT_MLFLOW = textwrap.dedent('''
    import sys
    from mlwork.core import NotFound
    from mlwork.models.registry import Registry
    reg = Registry(sys.argv[1])
    assert len(reg.list()) == 0
    try:
        reg.show('credit')
    except NotFound as e:
        assert 'none yet' in str(e)
    print('mlflow imported' if 'mlflow' in sys.modules else 'mlflow not imported')
''')


def test_an_empty_registry_answers_without_mlflow(tmp_path, empty_db, models):
    "Listing an empty registry, or looking up a model that is not there, reads sqlite directly: no MLflow import."
    fresh = init_workspace(tmp_path / 'fresh').workspace          # no database file at all
    out = subprocess.run([sys.executable, '-c', _LIST_WITHOUT_MLFLOW, str(fresh.root)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'mlflow not imported' and not (fresh.path('models') / 'mlflow.db').exists()
    ws = _workspace(tmp_path / 'ws', empty_db)                      # a database with no model
    out = subprocess.run([sys.executable, '-c', _LIST_WITHOUT_MLFLOW, str(ws.root)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'mlflow not imported'
    reg = Registry(ws)                                               # with a model, MLflow answers as before
    reg.register(models[0], 'credit')
    with pytest.raises(NotFound, match=r"No registered model 'fraud'; registered models: 'credit'"):
        Registry(ws).show('fraud')
    assert [v.version for v in Registry(ws).list().models['credit']] == [1]


def test_publish_registers_with_card_and_promotes(reg, models):
    m = train_model(generate('credit', n_rows=600, seed=5).frame, 'repaid', features=FEATURES, num_boost_round=30,
                    early_stopping_rounds=5)
    v = reg.publish(m, 'credit', alias='champion', description='trained on credit@1', reason='mlwork train')
    assert v.aliases == ['champion'] and v.description == 'trained on credit@1'
    assert v.metrics == {f'valid_{k}': x for k, x in m.validation_metrics().items()}
    card = reg.card('credit', v.version)
    assert card['name'] == 'credit' and card['metrics'][0]['set'] == 'validation'
    assert reg.audit.entries()['action'].to_list()[-2:] == ['model.register', 'model.promote']


def test_a_copied_workspace_verifies_its_own_artifacts_and_a_moved_one_still_verifies(tmp_path, empty_db, models):
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws)
    v = reg.register(models[0], 'credit')
    assert reg.show('credit', 1).run_id and reg._client.get_model_version('credit', '1').tags['mlwork.artifacts'] == \
        f'workspace:artifacts/{v.run_id}/artifacts/model'                # stored relative to the workspace
    copy = tmp_path / 'copy'
    shutil.copytree(ws.root, copy)
    art = copy / 'models' / 'artifacts' / v.run_id / 'artifacts' / ARTIFACT_PATH / MODEL_FILE
    raw = bytearray(art.read_bytes()); raw[len(raw) // 2] ^= 1; art.write_bytes(bytes(raw))   # one byte of the copy's artifact
    with pytest.raises(SignatureError, match=r"Model 'credit' version 1 failed verification.*changed after signing"):
        Registry(copy).verify('credit', 1)                              # the copy reads its own (changed) bytes
    assert reg.verify('credit', 1).ok                                   # the original's are untouched
    c2 = Registry(copy)
    w = c2.register(models[1], 'credit')                                # a registration in the copy stays in the copy
    assert (copy / 'models' / 'artifacts' / w.run_id).is_dir() and not (ws.path('models') / 'artifacts' / w.run_id).exists()
    moved = tmp_path / 'moved'
    shutil.move(str(ws.root), moved)                                    # the original, moved: verifies and loads there
    r = Registry(moved)
    assert r.verify('credit', 1).ok and r.load('credit', 1).model_text() == models[0].model_text()
    r.promote('credit', 1)
    assert r.show('credit').version == 1


def test_registry_files_are_private_under_umask_022(tmp_path, models):
    import os
    old = os.umask(0o022)
    try:
        ws = init_workspace(tmp_path / 'ws').workspace                  # a fresh database: created by this test
        reg = Registry(ws)
        v = reg.register(models[0], 'credit')
        reg.promote('credit', 1)
    finally:
        os.umask(old)
    models_dir = ws.path('models')
    assert (models_dir / 'mlflow.db').stat().st_mode & 0o777 == 0o600
    folder = models_dir / 'artifacts' / v.run_id / 'artifacts' / ARTIFACT_PATH
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600}
    assert {p.stat().st_mode & 0o777 for p in (models_dir / '.locks').iterdir()} == {0o600}
    assert not list((ws.root / 'tmp').glob('register-*'))              # the staging folder is gone


def test_a_tracking_server_password_never_appears_in_an_error(tmp_path, empty_db, monkeypatch):
    import traceback
    monkeypatch.setenv('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '0')
    monkeypatch.setenv('MLFLOW_HTTP_REQUEST_TIMEOUT', '2')
    ws = _workspace(tmp_path / 'ws', empty_db)
    reg = Registry(ws, tracking_uri='http://alice:s3cr3t-pw@127.0.0.1:9')   # nothing listens on port 9
    with pytest.raises(Exception) as info:
        reg.list()
    text = ''.join(traceback.format_exception(info.value))
    assert 's3cr3t-pw' not in text and '127.0.0.1' in text, text[-1500:]


def test_the_signer_must_be_the_key_recorded_at_registration(reg, models):
    reg.register(models[0], 'credit')
    reg._client.set_model_version_tag('credit', '1', 'mlwork.key_id', 'ed25519:0000000000000000')   # another recorded signer
    with pytest.raises(SignatureError, match=r"version 1 failed verification: its artifacts are signed by key .* but it was registered signed by 'ed25519:0000000000000000'"):
        reg.verify('credit', 1)
    with pytest.raises(SignatureError, match='version 1'):
        reg.promote('credit', 1)
