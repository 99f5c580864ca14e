"""mlwork.train_model against calling lightgbm.train directly, on the same rows with the same parameters.

Both sides start from the same polars frame (the `credit` generator: 7 numeric features and 4 Enum
categoricals, binary target `repaid`), train the same number of rounds (no early stopping, so the tree count
is equal), record the validation curve on a 20 % hold-out and write the model to disk. mlwork's side also
pays for what it adds: schema and target checks, the stratified split, the category mapping, the content hash
of the training data, the lineage (code version, package versions), logging, the JSON model file, and an
Ed25519 signature of that file (`mlwork.security.sign_file`, as the registry does). The peer does what a
careful hand-written script does: Enum codes to a float matrix, a seeded random split, `lgb.Dataset`,
`lgb.train`, `Booster.save_model`.

ratio = mlwork rows/s ÷ peer rows/s; overhead = 1/ratio − 1 (target: ≤ 5 %)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from harness import Case, Measure

NAME = 'train'
DESCRIPTION = 'train_model (+ lineage, logging, save, sign_file) vs lightgbm.train on the same matrix and parameters'
DEFAULT_ROWS = 1_000_000
DEFAULT_PEER_ROWS = 1_000_000

ROUNDS = 100
PARAMS = {'learning_rate': 0.1, 'num_leaves': 31}


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    import lightgbm as lgb
    import numpy as np
    import polars as pl

    from mlwork.core import init_workspace
    from mlwork.security import ensure_signing_key, sign_file
    from mlwork.synthetic import generate
    from mlwork.models.train import _lgb_params, train_model

    frame = generate('credit', n_rows=rows, seed=seed).frame
    target = 'repaid'
    features = [c for c in frame.columns if c not in ('id', 'timestamp', target)]
    tmp = Path(tempfile.mkdtemp(prefix='mlwork-bench-train-'))
    key = ensure_signing_key(init_workspace(tmp / 'ws').workspace)
    params = _lgb_params('binary', [0, 1], PARAMS, seed, 2, False, None)  # exactly what train_model passes to LightGBM

    def ours():
        m = train_model(frame, target, features=features, params=PARAMS, num_boost_round=ROUNDS,
                        early_stopping_rounds=None, seed=seed, num_threads=2)
        path = m.save(tmp / 'mlwork-model.json')
        return sign_file(path, key, name='bench-credit', version=1, metadata={'content_hash': m.lineage.data['content_hash']})

    def peer():
        x = np.column_stack([frame[c].to_physical().cast(pl.Float64).fill_null(float('nan')).to_numpy() for c in features])
        y = frame[target].to_numpy()
        cat_idx = [i for i, c in enumerate(features) if isinstance(frame.schema[c], pl.Enum)]
        valid = np.random.default_rng(seed).random(len(y)) < 0.2
        train_set = lgb.Dataset(x[~valid], y[~valid], feature_name=features, categorical_feature=cat_idx, params=params,
                                free_raw_data=True)
        evals: dict = {}
        booster = lgb.train(params, train_set, num_boost_round=ROUNDS, valid_sets=[lgb.Dataset(x[valid], y[valid], reference=train_set)],
                            valid_names=['valid'], callbacks=[lgb.record_evaluation(evals)])
        return booster.save_model(str(tmp / 'peer-model.txt'))

    note = (f'{len(features)} features (4 Enum categoricals), {ROUNDS} rounds, no early stopping, 2 threads; '
            f'overhead = 1/ratio − 1, target ≤ 5 %')
    return [Case('credit', Measure(f'mlwork train_model + save + sign ({ROUNDS} rounds)', ours, rows),
                 Measure(f'lightgbm.train + save_model ({ROUNDS} rounds)', peer, rows), note=note)]
