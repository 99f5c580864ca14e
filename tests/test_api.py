"""The public API: every name `mlwork` lists resolves to the object its defining module exports, lazily."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mlwork


@pytest.mark.parametrize('name', sorted(set(mlwork.__all__) - {'__version__'}))
def test_every_public_name_resolves_to_its_defining_module(name):
    obj = getattr(mlwork, name)
    module = importlib.import_module(mlwork._API[name], 'mlwork')
    assert obj is getattr(module, name)
    assert name in getattr(module, '__all__', [name]), f'{name} is not in {module.__name__}.__all__'


def test_import_mlwork_loads_no_heavy_dependency():
    code = ('import sys, mlwork; heavy = [m for m in ("polars", "numpy", "mlflow", "lightgbm", "whylogs", "deltalake", "scipy") '
            'if m in sys.modules]; print(",".join(heavy))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '', f'import mlwork imported {r.stdout.strip()}'


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'mlwork' has no attribute 'DriftDetecter'"):
        mlwork.DriftDetecter  # noqa: B018


def test_dir_lists_the_public_api():
    assert {'DriftDetector', 'DatasetStore', 'validate', 'Registry', 'train_model'} <= set(dir(mlwork))
