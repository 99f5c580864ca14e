"""mlwork.drift.alibi against alibi-detect called directly, on the same arrays.

alibi-detect 0.13 pins numpy<2, so it cannot live in mlwork's venv (numpy 2.4): the comparisons run in
the peers' venv (bench/peers/requirements.txt; MLWORK_PEERS_PYTHON, default .peers-venv/bin/python)
as a subprocess that imports mlwork from this checkout. Without that venv these tests are skipped with
the reason shown; set MLWORK_REQUIRE_PEERS=1 (CI) to make a missing venv a failure instead.
alibi-detect is under the Business Source License 1.1: it is a test oracle here, never a dependency of the core.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = os.environ.get('MLWORK_PEERS_PYTHON', str(Path(__file__).resolve().parents[1] / '.peers-venv' / 'bin' / 'python'))


def peers_python() -> str:
    "The peers' interpreter, or skip (fail under MLWORK_REQUIRE_PEERS=1) saying why."
    ok = Path(PEERS_PYTHON).exists() and subprocess.run(
        [PEERS_PYTHON, '-c', 'import alibi_detect, polars'], capture_output=True, cwd=ROOT).returncode == 0
    if not ok:
        msg = (f'peers venv with alibi-detect not found at {PEERS_PYTHON} (build it from bench/peers/requirements.txt '
               'or set MLWORK_PEERS_PYTHON)')
        if os.environ.get('MLWORK_REQUIRE_PEERS') == '1':
            pytest.fail(msg)
        pytest.skip(msg)
    return PEERS_PYTHON


def run_in_peers(code: str) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '3'}
    out = subprocess.run([peers_python(), '-c', code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


ORACLE = r'''
import json
import numpy as np, pandas as pd, polars as pl
from alibi_detect.cd import TabularDrift, KSDrift, ChiSquareDrift
from mlwork.drift.alibi import AlibiDetector

rng = np.random.default_rng(7)
n, m = 1500, 1200
ref = pl.DataFrame({'x': rng.normal(size=n), 'y': rng.exponential(size=n), 'k': rng.integers(0, 5, n),
                    'g': rng.choice(['a', 'b', 'c'], n, p=[.5, .3, .2]), 'h': rng.choice(['u', 'v'], n)})
cur = pl.DataFrame({'x': rng.normal(0.3, 1, size=m), 'y': rng.exponential(size=m), 'k': rng.integers(0, 5, m),
                    'g': rng.choice(['a', 'b', 'c', 'd'], m, p=[.4, .3, .2, .1]), 'h': rng.choice(['u', 'v'], m)})

def encode(cols):
    "The arrays written independently: pandas, sorted reference categories, unseen ones appended."
    r, c = ref.to_pandas(), cur.to_pandas()
    xr, xc = np.empty((n, len(cols))), np.empty((m, len(cols)))
    for j, name in enumerate(cols):
        if r[name].dtype == object:
            codes = {v: i for i, v in enumerate(sorted(r[name].unique()))}
            for v in sorted(set(c[name]) - set(codes)):
                codes[v] = len(codes)
            xr[:, j], xc[:, j] = r[name].map(codes), c[name].map(codes)
        else:
            xr[:, j], xc[:, j] = r[name], c[name]
    return xr, xc

def compare(label, ours, direct, cols):
    d = direct['data']
    p, dist, thr = np.asarray(d['p_val'], float), np.asarray(d['distance'], float), d['threshold']
    t = ours.columns
    thr_s = float(thr) if np.ndim(thr) == 0 else None
    return {'label': label, 'columns': t['column'].to_list() == cols,
            'p_equal': t['p_value'].to_list() == p.tolist(), 'dist_equal': t['statistic'].to_list() == dist.tolist(),
            'batch_equal': ours.drift_detected == bool(d['is_drift']),
            'rows_equal': t['drift'].to_list() == ([bool(v < thr_s) for v in p] if thr_s is not None else [False] * len(p)),
            'drift_detected': ours.drift_detected, 'drifted': ours.drifted, 'tests': t['test'].to_list(),
            'unseen_g': t.filter(pl.col('column') == 'g')['unseen'].to_list()}

out = []
cols = ['x', 'y', 'k', 'g', 'h']
xr, xc = encode(cols)
direct = TabularDrift(xr, p_val=0.05, categories_per_feature={3: None, 4: None}).predict(xc, drift_type='batch')
out.append(compare('tabular', AlibiDetector('TabularDrift', p_val=0.05).fit(ref).score(cur), direct, cols))
direct = TabularDrift(xr, p_val=0.05, categories_per_feature={3: None, 4: None}, correction='fdr').predict(xc, drift_type='batch')
out.append(compare('tabular-fdr', AlibiDetector(TabularDrift, p_val=0.05, correction='fdr').fit(ref).score(cur), direct, cols))
num = ['x', 'y', 'k']
xr, xc = encode(num)
out.append(compare('ks', AlibiDetector('KSDrift').fit(ref).score(cur), KSDrift(xr).predict(xc, drift_type='batch'), num))
cat = ['g', 'h']
xr, xc = encode(cat)
out.append(compare('chi2', AlibiDetector('ChiSquareDrift').fit(ref).score(cur), ChiSquareDrift(xr).predict(xc, drift_type='batch'), cat))
# no drift: the reference's two halves
half = AlibiDetector('TabularDrift').fit(ref[:750]).score(ref[750:])
out.append({'label': 'null', 'drift_detected': half.drift_detected})
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def oracle() -> dict:
    return {r['label']: r for r in run_in_peers(ORACLE)}


@pytest.mark.parametrize('label', ['tabular', 'tabular-fdr', 'ks', 'chi2'])
def test_equals_alibi_detect_called_directly(oracle, label):
    r = oracle[label]
    assert r['columns'] and r['p_equal'] and r['dist_equal'], r
    assert r['batch_equal'] and r['rows_equal'], r


def test_finds_the_drift_and_names_the_tests(oracle):
    assert oracle['tabular']['drifted'] == ['x', 'g']
    assert oracle['tabular']['tests'] == ['ks', 'ks', 'ks', 'chi2', 'chi2']
    assert oracle['tabular']['unseen_g'] == [['d']]
    assert oracle['chi2']['drifted'] == ['g'] and oracle['ks']['drifted'] == ['x']
    assert not oracle['null']['drift_detected']


def test_core_never_imports_alibi_detect():
    code = ('import sys, mlwork.drift.alibi, mlwork.drift.univariate; assert "alibi_detect" not in sys.modules, "imported at import time"\n'
            'from mlwork.drift.alibi import AlibiDetector, AlibiNotInstalled\n'
            'import polars as pl\n'
            'try:\n    AlibiDetector("KSDrift").fit(pl.DataFrame({"x": [1.0, 2.0]}))\n'
            'except AlibiNotInstalled as e:\n    assert "pip install mlwork[alibi]" in str(e) and "Business Source License" in str(e); print("ok")\n'
            'else:\n    print("installed")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ('ok', 'installed')
