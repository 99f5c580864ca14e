"""Register + load a model (with signature verification) in a warm process; the issue's target is under a second.

    python bench/bench_registry.py [--repeat 5] [--rows 100000]

A fresh workspace, a LightGBM model trained on `--rows` synthetic credit rows (100 rounds), one untimed
registration to create the sqlite registry (MLflow's schema migrations, once per workspace), then `--repeat`
timed rounds of `Registry.register` (artifacts written, signed, logged, audited) and `Registry.load`
(artifacts fetched, manifest and every signature verified, model parsed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--rows', type=int, default=100_000)
    a = ap.parse_args()
    from mlwork.core import init_workspace
    from mlwork.models.registry import Registry
    from mlwork.synthetic import generate
    from mlwork.models.train import train_model
    with tempfile.TemporaryDirectory() as d:
        ws = init_workspace(Path(d) / 'ws').workspace
        frame = generate('credit', n_rows=a.rows, seed=0).frame.drop('id', 'timestamp')
        model = train_model(frame, 'repaid', num_boost_round=100, early_stopping_rounds=None)
        reg = Registry(ws)
        t = time.perf_counter(); reg.register(model, 'bench', reason='warm-up'); first = time.perf_counter() - t
        reg_s, load_s = [], []
        for _ in range(a.repeat):
            t = time.perf_counter(); mv = reg.register(model, 'bench', reason='bench'); reg_s.append(time.perf_counter() - t)
            t = time.perf_counter(); loaded = reg.load('bench', mv.version); load_s.append(time.perf_counter() - t)
            assert loaded.model_text() == model.model_text()
        size = len(model.model_text()) / 1e6
        med = statistics.median
        print(f"model text {size:.2f} MB ({model.lineage.best_iteration} trees); first registration (creates the registry) {first:.2f} s")
        print(f"register: median {med(reg_s) * 1e3:.0f} ms (min {min(reg_s) * 1e3:.0f}, max {max(reg_s) * 1e3:.0f}); "
              f"load with verification: median {med(load_s) * 1e3:.0f} ms (min {min(load_s) * 1e3:.0f}, max {max(load_s) * 1e3:.0f}); "
              f"register + load: median {med([r + l for r, l in zip(reg_s, load_s)]) * 1e3:.0f} ms over {a.repeat} rounds")


if __name__ == '__main__':
    main()
