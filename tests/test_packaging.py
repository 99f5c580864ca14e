"""Packaging: setup.py works on Python 3.11 without pkg_resources, and the wheel carries its data."""
from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_setup_py_has_no_pkg_resources_and_lists_311():
    text = (REPO / 'setup.py').read_text()
    assert 'pkg_resources' not in text
    r = subprocess.run([sys.executable, 'setup.py', '--classifiers'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'Programming Language :: Python :: 3.11' in r.stdout


def test_nbdev_pins_and_extras():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(REPO / 'settings.ini')
    d = cfg['DEFAULT']
    dev = d['dev_requirements'].split()
    assert {'nbdev>=2.4.14,<3', 'fastcore<2', 'execnb<0.2'} <= set(dev)
    assert 'alibi' in d['alibi_requirements'] and 'alibi' not in d['requirements'] + d['dev_requirements']
    assert 'cupy' in d['gpu_requirements'] and 'dask' in d['dask_requirements']


def test_wheel_contains_data_attribution_and_templates(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = next(tmp_path.glob('mlwork-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ('mlwork/resources/acs_employment_ma.parquet', 'mlwork/resources/README.md', 'mlwork/templates/report.html.j2',
              'mlwork/cli/main.py', 'mlwork/data/store.py', 'mlwork/drift/univariate.py', 'mlwork/models/registry.py',
              'mlwork/_modidx.py', 'mlwork/pipelines/notebooks/drift.ipynb', 'mlwork/pipelines/notebooks/cycle.ipynb',
              'mlwork/resources/widgets/embed.js', 'mlwork/pipelines/runs.py', 'mlwork/schedule/serve.py'):  # every subpackage of the layout ships
        assert f in names, f
    meta = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'mlwork = mlwork.cli.main:main' in zipfile.ZipFile(wheel).read(meta).decode()
