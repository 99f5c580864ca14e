"""The two per-request steps of `mlwork serve` that every single-row request pays before LightGBM runs, each against
the way it is commonly done, in the same run:

- **encode one row**: `FeatureSchema.rows_to_matrix([row])` (a JSON row of 20 numbers and 5 categories checked field
  by field and turned into LightGBM's float64 row, categories as the model's codes) against building a one-row pandas
  DataFrame and coding its categories (`pd.Categorical(..., categories=...)`), as pandas-based servers (MLflow's
  pyfunc among them) start each request. Both give the same matrix (asserted first).
- **authenticate**: `KeyStore.authenticate(secret)` (key id from the secret, SHA-256 of the secret, constant-time
  compare, revocation check; the key file's signature checked by one `stat` a call so a revoked key stops at once)
  against the bare floor of any hashed-key check: SHA-256 and `hmac.compare_digest` against a dict of hashes held in
  memory (no file check, no revocation).

`rows` is the number of calls per timed run (`peer_rows` for the pandas side, about 2 ms a row); the ratio is calls per second, mlwork ÷ peer. The test suite prints these
times (tests/test_scoring.py, tests/test_access.py) and asserts none: speed is measured here.
"""
from __future__ import annotations

import hashlib
import hmac
import tempfile
from typing import Any

from harness import Case, Measure

NAME = 'request'
DESCRIPTION = 'per-request steps of the service: one-row encoding vs a one-row pandas frame; authenticate vs bare SHA-256 + compare'
DEFAULT_ROWS = 20_000
DEFAULT_PEER_ROWS = 1_000  # the pandas side: about 2 ms a row
CATS = ['north', 'south', 'east', 'west', 'centre']
_TMP = tempfile.TemporaryDirectory(prefix='mlwork-bench-request-')


def _model_and_rows(seed: int) -> tuple[Any, list[dict[str, Any]]]:
    import numpy as np
    import polars as pl

    from mlwork.models.train import train_model
    rng = np.random.default_rng(seed)
    n = 2_000
    f = pl.DataFrame({**{f'x{i}': rng.normal(size=n) for i in range(20)},
                      **{f'c{i}': rng.choice(CATS, n) for i in range(5)}})
    f = f.with_columns(y=(f['x0'] > 0).cast(pl.Int8))
    model = train_model(f, 'y', num_boost_round=5, early_stopping_rounds=None, seed=seed)
    return model, f.drop('y').head(100).to_dicts()


def _pandas_encoder(schema: Any) -> Any:
    import numpy as np
    import pandas as pd
    features = list(schema.features)
    cats = {f: pd.CategoricalDtype(schema.categories[f]) for f in features if schema.kinds[f] == 'categorical'}

    def encode(row: dict[str, Any]) -> np.ndarray:
        df = pd.DataFrame([row], columns=features)
        for c, dtype in cats.items():
            codes = df[c].astype(dtype).cat.codes.to_numpy()
            df[c] = np.where(codes < 0, np.nan, codes.astype(np.float64))
        return df.to_numpy(dtype=np.float64)
    return encode


def _keys(n_keys: int) -> tuple[Any, list[str]]:
    from mlwork.core import init_workspace
    from mlwork.serve.access import KeyStore
    ws = init_workspace(f'{_TMP.name}/ws').workspace
    store = KeyStore(ws)
    return store, [store.create(f'k{i}', 'scorer', user='bench')[1] for i in range(n_keys)]


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    import numpy as np
    import polars as pl

    from mlwork.serve.scoring import FeatureSchema
    model, samples = _model_and_rows(seed)
    schema = FeatureSchema.from_model(model)
    pandas_row = _pandas_encoder(schema)
    for r in samples[:20]:  # the same matrix, and the model's own encoding of the row
        ours = schema.rows_to_matrix([r])
        np.testing.assert_array_equal(ours, pandas_row(r))
        np.testing.assert_array_equal(ours, model.matrix(pl.DataFrame([r])))
    k = len(samples)

    def encode_ours() -> None:
        for i in range(rows):
            schema.rows_to_matrix([samples[i % k]])

    def encode_peer() -> None:
        for i in range(peer_rows):
            pandas_row(samples[i % k])

    store, secrets_ = _keys(10)
    hashes = [hashlib.sha256(s.encode()).digest() for s in secrets_]  # looked up by position: no parsing either
    for s in secrets_:
        assert store.authenticate(s).key_id, 'a created key does not authenticate'

    def auth_ours() -> None:
        for i in range(rows):
            store.authenticate(secrets_[i % 10])

    def auth_floor() -> None:
        for i in range(rows):
            s = secrets_[i % 10]
            if not hmac.compare_digest(hashlib.sha256(s.encode()).digest(), hashes[i % 10]):
                raise AssertionError('floor: hash mismatch')

    return [
        Case('encode one row (20 numbers, 5 categories)', Measure('FeatureSchema.rows_to_matrix([row])', encode_ours, rows),
             Measure('pandas: one-row DataFrame, categories coded', encode_peer, peer_rows),
             note='One call per row, as a single-row request makes it.'),
        Case('authenticate an API key', Measure('KeyStore.authenticate(secret)', auth_ours, rows),
             Measure('SHA-256 + hmac.compare_digest against a dict in memory', auth_floor, rows),
             note='The peer is the floor of any hashed-key check: no key-file check, no revocation.'),
    ]
