"""mlwork.drift.univariate's distances against Evidently 0.7's definitions, on the same data.

Evidently 0.7.23 does not import on pandas 3 (mlwork's venv), so the comparison runs in the peers' venv
(bench/peers/requirements.txt; MLWORK_PEERS_PYTHON, default .peers-venv/bin/python) as a subprocess
that imports mlwork from this checkout. Without that venv the tests are skipped with the reason shown;
MLWORK_REQUIRE_PEERS=1 (CI) turns a missing venv into a failure.

What is compared:
- numeric: DriftDetector's `effect_value` (normalised Wasserstein) = Evidently's default drift score for
  numeric columns of > 1,000 rows, "Wasserstein distance (normed)" (W1 / reference std, ddof=0);
- categorical: Evidently's default for > 1,000 rows is `scipy.spatial.distance.jensenshannon` with the
  natural logarithm; mlwork reports it in base 2 (in [0, 1]), so mlwork `js` = Evidently / sqrt(ln 2);
- numeric Jensen–Shannon: Evidently bins the two samples together with numpy's Sturges edges, mlwork on
  reference deciles; `mlwork.drift.univariate.js_distance` on Evidently's bins equals Evidently's value (base e → 2).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = os.environ.get('MLWORK_PEERS_PYTHON', str(Path(__file__).resolve().parents[1] / '.peers-venv' / 'bin' / 'python'))

CODE = r'''
import json, sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])

def values(snapshot):
    return {m['config']['column']: (m['metric_name'].split('method=')[1].split(',threshold')[0], float(m['value']))
            for m in snapshot.dict()['metrics'] if m['config']['type'].endswith('ValueDrift')}

print(json.dumps({'default': values(Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)),
                  'forced': values(Report([DataDriftPreset(num_method='jensenshannon')]).run(current_data=cur, reference_data=ref))}))
'''


@pytest.fixture(scope='module')
def peers(tmp_path_factory) -> dict:
    "Evidently's scores in the peers' venv; mlwork's here (mlwork.drift.univariate needs numpy 2), on the same Parquet bytes."
    ok = Path(PEERS_PYTHON).exists() and subprocess.run(
        [PEERS_PYTHON, '-c', 'import evidently, pyarrow'], capture_output=True, cwd=ROOT).returncode == 0
    if not ok:
        msg = f'peers venv with Evidently not found at {PEERS_PYTHON} (build it from bench/peers/requirements.txt)'
        if os.environ.get('MLWORK_REQUIRE_PEERS') == '1':
            pytest.fail(msg)
        pytest.skip(msg)
    import numpy as np
    from mlwork.drift.power import drift_benchmark
    from mlwork.drift.univariate import DriftDetector, js_distance
    ref, cur, _ = drift_benchmark(4000, shift=0.2, seed=11)
    folder = tmp_path_factory.mktemp('peers')
    ref.write_parquet(folder / 'ref.parquet')
    cur.write_parquet(folder / 'cur.parquet')
    out = subprocess.run([PEERS_PYTHON, '-c', CODE, str(folder / 'ref.parquet'), str(folder / 'cur.parquet')],
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr[-4000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    res = DriftDetector().fit(ref).score(cur)
    ours = {r['column']: {'effect_value': r['effect_value'], 'js': r['js'], 'kind': r['kind']} for r in res.columns.to_dicts()}
    numeric_js = {}
    for c in [c for c in ref.columns if c.startswith('num_')]:
        r, k = ref[c].to_numpy(), cur[c].to_numpy()
        if len(np.unique(r)) > 20:  # Evidently's rule for binning a numeric column
            edges = np.histogram_bin_edges(np.concatenate([r, k]), bins='sturges')
            numeric_js[c] = js_distance(np.histogram(r, edges)[0] / len(r), np.histogram(k, edges)[0] / len(k))
    return {**theirs, 'ours': ours, 'numeric_js': numeric_js}


def test_normalised_wasserstein_is_evidentlys(peers):
    numeric = [c for c, v in peers['ours'].items() if v['kind'] == 'numeric']
    assert len(numeric) == 20
    for c in numeric:
        method, value = peers['default'][c]
        assert method == 'Wasserstein distance (normed)'
        assert math.isclose(peers['ours'][c]['effect_value'], value, rel_tol=1e-9, abs_tol=1e-12), c


def test_categorical_jensen_shannon_is_evidentlys_in_base_2(peers):
    cats = [c for c, v in peers['ours'].items() if v['kind'] == 'categorical']
    assert len(cats) == 5
    for c in cats:
        method, value = peers['default'][c]
        assert method == 'Jensen-Shannon distance'
        assert math.isclose(peers['ours'][c]['js'], value / math.sqrt(math.log(2)), rel_tol=1e-9, abs_tol=1e-12), c


def test_numeric_jensen_shannon_on_evidentlys_bins(peers):
    assert len(peers['numeric_js']) >= 15  # the Poisson columns have <= 20 distinct values and are not binned
    for c, ours in peers['numeric_js'].items():
        method, value = peers['forced'][c]
        assert method in ('jensenshannon', 'Jensen-Shannon distance')
        assert math.isclose(ours, value / math.sqrt(math.log(2)), rel_tol=1e-9, abs_tol=1e-12), c
