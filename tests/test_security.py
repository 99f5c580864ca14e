"""Artifact signing: round trips, every way an artifact or its signature can be damaged, key-file permissions,
keys created by racing processes, and secrets kept out of reprs, dicts and logs."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mlwork.core import ConfigError, InvalidParameter, NotFound, PermissionDenied, SignatureError, init_workspace, setup_logging
from mlwork.security import (KeyPair, PublicKey, ensure_signing_key, keys_dir, sidecar_path, sign_file, trust_key,
                             trusted_keys, verify_file)


@pytest.fixture
def ws(tmp_path):
    return init_workspace(tmp_path / 'ws').workspace


def artifact(tmp_path: Path, name: str = 'model.lgb', size: int = 4096, seed: int = 0) -> Path:
    p = tmp_path / name
    p.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32))
    return p


def test_round_trip_and_independent_check(ws, tmp_path):
    key = ensure_signing_key(ws)
    p = artifact(tmp_path)
    sig = sign_file(p, key, name='fraud', version='7', metadata={'run_id': 'r1'})
    v = verify_file(p, ws, name='fraud', version=7)
    assert (v.ok, v.name, v.version, v.size, v.metadata) == (True, 'fraud', '7', 4096, {'run_id': 'r1'})
    # independent oracle: hashlib for the digest, cryptography directly for the signature over the statement
    doc = json.loads(sidecar_path(p).read_text())
    assert doc['sha256'] == hashlib.sha256(p.read_bytes()).hexdigest() == sig.sha256
    signature = base64.b64decode(doc.pop('signature'))
    statement = json.dumps(doc, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()
    pem = (keys_dir(ws) / 'signing.pub').read_bytes()
    from cryptography.hazmat.primitives import serialization
    serialization.load_pem_public_key(pem).verify(signature, statement)  # raises if wrong
    assert 'verified artifact' in v._repr_html_() and json.dumps(v.to_dict())
    assert not list(tmp_path.glob('.*.tmp'))  # atomic write left nothing behind


@pytest.mark.parametrize('offset', [0, 2048, 4095])
def test_flipped_byte_names_the_model(ws, tmp_path, offset):
    p = artifact(tmp_path)
    sign_file(p, ensure_signing_key(ws), name='credit', version=2)
    b = bytearray(p.read_bytes()); b[offset] ^= 0x01; p.write_bytes(bytes(b))
    with pytest.raises(SignatureError, match=r"model 'credit' version 2\) changed after signing: expected sha256 [0-9a-f]{64}, found"):
        verify_file(p, ws)


def test_truncated_and_extended(ws, tmp_path):
    p = artifact(tmp_path)
    sign_file(p, ensure_signing_key(ws))
    data = p.read_bytes()
    p.write_bytes(data[:100])
    with pytest.raises(SignatureError, match='truncated after signing: expected 4096 bytes, found 100'):
        verify_file(p, ws)
    p.write_bytes(data + b'x')
    with pytest.raises(SignatureError, match='extended after signing: expected 4096 bytes, found 4097'):
        verify_file(p, ws)
    p.write_bytes(b'')
    with pytest.raises(SignatureError, match='found 0'):
        verify_file(p, ws)


def test_signature_swapped_from_another_artifact(ws, tmp_path):
    key = ensure_signing_key(ws)
    a, b = artifact(tmp_path, 'a.lgb', seed=1), artifact(tmp_path, 'b.lgb', seed=2)
    sign_file(a, key, name='m', version=1); sign_file(b, key, name='m', version=2)
    shutil.copy(sidecar_path(b), sidecar_path(a))
    with pytest.raises(SignatureError, match=r"belongs to another artifact: it was made for 'b.lgb', found beside 'a.lgb'"):
        verify_file(a, ws)
    # the same swap with the file name rewritten in the sidecar breaks the signature itself
    doc = json.loads(sidecar_path(a).read_text()); doc['file'] = 'a.lgb'
    sidecar_path(a).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match='was edited or forged'):
        verify_file(a, ws)
    # both b's bytes and sidecar copied over a: valid signature, but it says version 2 and file b.lgb
    shutil.copy(b, a); shutil.copy(sidecar_path(b), sidecar_path(a))
    with pytest.raises(SignatureError, match="made for 'b.lgb'"):
        verify_file(a, ws)


def test_edited_sidecar_to_match_new_bytes(ws, tmp_path):
    p = artifact(tmp_path)
    sign_file(p, ensure_signing_key(ws))
    p.write_bytes(b'evil model' * 10)
    doc = json.loads(sidecar_path(p).read_text())
    doc.update(sha256=hashlib.sha256(p.read_bytes()).hexdigest(), size=p.stat().st_size)
    sidecar_path(p).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match='edited or forged'):
        verify_file(p, ws)


def test_wrong_and_unknown_key(ws, tmp_path):
    p = artifact(tmp_path)
    stranger = KeyPair.generate()
    ensure_signing_key(ws)
    sign_file(p, stranger, name='fraud', version=1)
    with pytest.raises(SignatureError, match=rf"signed by an unknown key '{stranger.key_id}'; trusted: ed25519:"):
        verify_file(p, ws)
    with pytest.raises(SignatureError, match='unknown key'):
        verify_file(p, KeyPair.generate())
    # a forger who puts a trusted key id on their own signature is caught by the signature check
    doc = json.loads(sidecar_path(p).read_text())
    doc['key_id'] = ensure_signing_key(ws).key_id
    sidecar_path(p).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match='edited or forged'):
        verify_file(p, ws)
    # once trusted, the stranger's signature verifies
    sign_file(p, stranger, name='fraud', version=1)
    trust_key(ws, stranger.public, 'colleague')
    assert verify_file(p, ws).key_id == stranger.key_id
    assert verify_file(p, [stranger.public]).ok and verify_file(p, stranger.public).ok


def test_missing_or_garbage_sidecar_and_missing_file(ws, tmp_path):
    p = artifact(tmp_path)
    with pytest.raises(SignatureError, match=r"is not signed: expected a signature at '.*model.lgb.sig', found none"):
        verify_file(p, ws, name='fraud', version=3)
    sidecar_path(p).write_text('{not json')
    with pytest.raises(SignatureError, match='is unreadable'):
        verify_file(p, ws)
    sidecar_path(p).write_text('[]')
    with pytest.raises(SignatureError, match='is unreadable'):
        verify_file(p, ws)
    with pytest.raises(NotFound):
        verify_file(tmp_path / 'nope.lgb', ws)
    with pytest.raises(NotFound):
        sign_file(tmp_path / 'nope.lgb', ensure_signing_key(ws))
    with pytest.raises(InvalidParameter, match="'key' parameter of sign_file"):
        sign_file(p, ensure_signing_key(ws).public)
    with pytest.raises(InvalidParameter, match="'keys' parameter of verify_file"):
        verify_file(p, 'not a key')


def test_failed_verification_changes_nothing(ws, tmp_path):
    p = artifact(tmp_path)
    sign_file(p, ensure_signing_key(ws))
    p.write_bytes(b'changed')
    before = (p.read_bytes(), sidecar_path(p).read_bytes())
    with pytest.raises(SignatureError):
        verify_file(p, ws)
    assert (p.read_bytes(), sidecar_path(p).read_bytes()) == before


def test_key_file_permissions(ws):
    key = ensure_signing_key(ws)
    priv = keys_dir(ws) / 'signing.key'
    assert priv.stat().st_mode & 0o777 == 0o600
    assert keys_dir(ws).stat().st_mode & 0o777 == 0o700
    assert list(trusted_keys(ws)) == [key.key_id]
    os.chmod(priv, 0o640)
    with pytest.raises(PermissionDenied, match=r'mode 0640\); expected 0600. Run `chmod 600'):
        ensure_signing_key(ws)
    os.chmod(priv, 0o600)
    assert ensure_signing_key(ws).key_id == key.key_id
    (keys_dir(ws) / 'signing.pub').unlink()  # a lost public key is rewritten from the private one
    assert ensure_signing_key(ws).key_id == key.key_id and (keys_dir(ws) / 'signing.pub').exists()


def test_racing_processes_get_one_key(ws):
    code = textwrap.dedent(f"""
        from mlwork.core import open_workspace
        from mlwork.security import ensure_signing_key
        print(ensure_signing_key(open_workspace({str(ws.root)!r})).key_id)
    """)
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(ids) == 1 and ids == {ensure_signing_key(ws).key_id}
    assert [f.name for f in keys_dir(ws).iterdir() if f.name.startswith('.')] == []


def test_secrets_never_shown(ws, tmp_path):
    buf = io.StringIO()
    setup_logging('DEBUG', 'json', stream=buf)
    try:
        key = ensure_signing_key(ws)
        sign_file(artifact(tmp_path), key, metadata={'api_token': 'tok-123', 'ok': 1})
    finally:
        setup_logging('WARNING', 'text')
    priv_pem = (keys_dir(ws) / 'signing.key').read_text()
    body = ''.join(priv_pem.strip().splitlines()[1:-1])
    raw = key._private.private_bytes_raw()
    shown = [repr(key), str(key), json.dumps(key.to_dict()), key._repr_html_(), f'{key}', buf.getvalue(),
             sidecar_path(tmp_path / 'model.lgb').read_text()]
    for text in shown:
        for secret in (body, body[:40], raw.hex(), base64.b64encode(raw).decode(), 'tok-123'):
            assert secret not in text
    assert key.key_id in repr(key) and 'signed artifact' in buf.getvalue()
    with pytest.raises(TypeError, match='cannot be pickled'):
        pickle.dumps(key)


def test_public_key_pem_round_trip():
    kp = KeyPair.generate()
    pk = PublicKey.from_pem(kp.public.to_pem())
    assert pk == kp.public and pk.key_id == kp.key_id
    assert isinstance(Ed25519PublicKey.from_public_bytes(pk.raw), Ed25519PublicKey)
    with pytest.raises(SignatureError, match='Not a PEM public key'):
        PublicKey.from_pem('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')


def test_encryption_round_trip_and_failures(ws, tmp_path, monkeypatch):
    from mlwork.core import ConfigError
    from mlwork.security import DataKey, data_key, decrypt_file, encrypt_file
    monkeypatch.delenv('MLWORK_DATA_KEY', raising=False)
    key = data_key(ws)
    assert (keys_dir(ws) / 'data.key').stat().st_mode & 0o777 == 0o600
    src = artifact(tmp_path)
    enc = encrypt_file(src, tmp_path / 'model.enc', key=key)
    assert src.read_bytes() not in enc.read_bytes()
    assert decrypt_file(enc, tmp_path / 'out.bin', key=key).read_bytes() == src.read_bytes()
    # two encryptions of the same bytes differ (random nonce)
    assert encrypt_file(src, tmp_path / 'again.enc', key=key).read_bytes() != enc.read_bytes()
    for damage, match in ((lambda b: b[:-1], 'its bytes changed'), (lambda b: b[:30], 'or it was truncated'),
                          (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], 'its bytes changed')):
        bad = tmp_path / 'bad.enc'; bad.write_bytes(damage(enc.read_bytes()))
        with pytest.raises(SignatureError, match=match):
            decrypt_file(bad, tmp_path / 'never.bin', key=key)
        assert not (tmp_path / 'never.bin').exists()
    with pytest.raises(SignatureError, match='was encrypted with key'):
        decrypt_file(enc, tmp_path / 'never.bin', key=DataKey.generate())
    # the environment variable wins over the workspace file
    other = os.urandom(32)
    monkeypatch.setenv('MLWORK_DATA_KEY', base64.b64encode(other).decode())
    env_key = data_key(ws)
    assert env_key.key_id != key.key_id
    for text in (repr(env_key), str(env_key), json.dumps(env_key.to_dict())):
        assert base64.b64encode(other).decode() not in text and other.hex() not in text
    monkeypatch.setenv('MLWORK_DATA_KEY', 'not-base64!')
    with pytest.raises(ConfigError, match=r'\$MLWORK_DATA_KEY must be the base64 of 32 random bytes'):
        data_key(ws)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_signatures_from_an_earlier_release_still_verify(tmp_path):
    "The signed bytes are mlwork.checks.canonical_json: a sidecar written before the change verifies, and signs the same."
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from mlwork.checks import canonical_json
    from mlwork.security import verify_file
    kp = KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    statement = {'format': 'mlwork-signature/1', 'algorithm': 'ed25519', 'key_id': kp.key_id, 'file': 'model.json', 'size': 5,
                 'sha256': hashlib.sha256(b'hello').hexdigest(), 'name': 'credit', 'version': '3', 'metadata': {'run': 'é'},
                 'signed_at': '2024-06-01T12:00:00+00:00'}
    known = '8KWEXGEroAn+TaC/I7Z5pkdjjxCwgg3Y+2JYTG9AuN830q17qlf37b6P3840di95xIRBvEcq1fzK9jvIXp/KCw=='  # from the earlier release
    assert kp.key_id == 'ed25519:56475aa75463474c'
    assert hashlib.sha256(canonical_json(statement)).hexdigest() == 'e1f3797b7d2e450a717ff38d08fe7640841cc4f13d1e57bca6eb9ddebb544e64'
    assert base64.b64encode(kp.sign(canonical_json(statement))).decode() == known
    art = tmp_path / 'model.json'
    art.write_bytes(b'hello')
    sidecar_path(art).write_text(json.dumps({**statement, 'signature': known}, indent=1, sort_keys=True) + '\n')
    v = verify_file(art, kp.public, name='credit', version=3)
    assert (v.ok, v.key_id, v.metadata) == (True, kp.key_id, {'run': 'é'})


def test_a_valid_signature_by_an_unpinned_key_is_refused(ws, tmp_path):
    "The attack: change a signed model, re-sign it with your own key and drop that key in keys/ as vendor.pub."
    from mlwork.security import check_signer, pin_keys, trusted_key_ids
    own = ensure_signing_key(ws)
    p = artifact(tmp_path)
    sign_file(p, own, name='credit', version=3)
    p.write_bytes(p.read_bytes()[:-1] + b'X')
    attacker = KeyPair.generate()
    sign_file(p, attacker, name='credit', version=3)
    (keys_dir(ws) / 'vendor.pub').write_text(attacker.public.to_pem())
    assert set(trusted_keys(ws)) == {own.key_id} and trusted_key_ids(ws) == {own.key_id}
    with pytest.raises(SignatureError, match=rf"signed by key {attacker.key_id}, which is not in this workspace's trust list "
                                             rf"\[{own.key_id}\]; trust it with `mlwork keys trust {attacker.key_id}"):
        verify_file(p, ws, name='credit', version=3)
    with pytest.raises(SignatureError, match="not in this workspace's trust list"):
        check_signer(ws, attacker.key_id, "model 'credit' version 3")
    pin_keys(ws, add=[attacker.key_id])            # trusting it on purpose is one explicit step
    assert verify_file(p, ws).key_id == attacker.key_id


def test_trust_list_from_the_environment_replaces_the_file(ws, tmp_path, monkeypatch):
    from mlwork.security import pin_keys, trusted_key_ids
    own = ensure_signing_key(ws)
    p = artifact(tmp_path)
    sign_file(p, own)
    monkeypatch.setenv('MLWORK_TRUSTED_KEYS', 'ed25519:0123456789abcdef')
    assert trusted_key_ids(ws) == {'ed25519:0123456789abcdef'}
    with pytest.raises(SignatureError, match="not in this workspace's trust list"):
        verify_file(p, ws)
    with pytest.raises(SignatureError, match=r"is not in this workspace's trust list \[ed25519:0123456789abcdef\] \(\$MLWORK_TRUSTED_KEYS\)"):
        ensure_signing_key(ws)                      # the workspace key cannot sign where it is not trusted
    with pytest.raises(ConfigError, match=r'change it there'):
        pin_keys(ws, add=[own.key_id])


def test_signing_key_held_outside_the_workspace(ws, tmp_path, monkeypatch):
    from mlwork.security import signing_key_source, trusted_key_ids, write_private
    ext = KeyPair.generate()
    path = write_private(tmp_path / 'vault' / 'prod.key', ext._private_pem())
    monkeypatch.setenv('MLWORK_SIGNING_KEY_FILE', str(path))
    assert signing_key_source(ws) == str(path)
    assert ensure_signing_key(ws).key_id == ext.key_id           # a fresh workspace pins it at first use
    assert trusted_key_ids(ws) == {ext.key_id} and not (keys_dir(ws) / 'signing.key').exists()
    p = artifact(tmp_path)
    sign_file(p, ensure_signing_key(ws))
    assert verify_file(p, ws).key_id == ext.key_id
    monkeypatch.delenv('MLWORK_SIGNING_KEY_FILE')
    monkeypatch.setenv('MLWORK_SIGNING_KEY', ext._private_pem().decode())
    assert ensure_signing_key(ws).key_id == ext.key_id
    monkeypatch.setenv('MLWORK_SIGNING_KEY', 'not a key')
    with pytest.raises(SignatureError, match=r'Private key in \$MLWORK_SIGNING_KEY cannot be read'):
        ensure_signing_key(ws)
