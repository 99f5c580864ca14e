"""The sync check that CI runs: it passes on the repository and fails on each kind of drift."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / '.ci' / 'check_sync.py'


@pytest.fixture
def repo_copy(tmp_path):
    dst = tmp_path / 'repo'
    dst.mkdir()
    for name in ('settings.ini', 'README.md', 'nbs', 'mlwork', '.ci'):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns('__pycache__', '*.parquet'))
        else:
            shutil.copy2(src, dst / name)
    return dst


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=300)


def edit_notebook(path: Path, fn) -> None:
    nb = json.loads(path.read_text())
    fn(nb)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def test_repository_is_in_sync(repo_copy):
    r = check(repo_copy)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unexported_notebook_edit_fails_then_export_fixes_it(repo_copy):
    def add_function(nb):
        cell = next(c for c in nb['cells'] if c['cell_type'] == 'code' and c['source'] and c['source'][0].startswith('#| export')
                    and any('def html_table' in l for l in c['source']))
        cell['source'][-1] += '\n\ndef added_in_notebook_only() -> int:\n    return 1'
    edit_notebook(repo_copy / 'nbs' / '00_foundation' / '03_report.ipynb', add_function)
    r = check(repo_copy)
    assert r.returncode == 1
    assert 'mlwork/ is out of sync with nbs/' in r.stdout and '+def added_in_notebook_only' in r.stdout
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_export')], cwd=repo_copy, check=True, capture_output=True)
    assert check(repo_copy).returncode == 0


def test_hand_edit_of_library_fails(repo_copy):
    lib = repo_copy / 'mlwork' / 'core.py'
    lib.write_text(lib.read_text() + '\nHAND_EDIT = True\n')
    r = check(repo_copy)
    assert r.returncode == 1 and '-HAND_EDIT = True' in r.stdout


def test_unclean_notebook_fails(repo_copy):
    def dirty(nb):
        nb['cells'][1]['execution_count'] = 7
        nb['metadata']['widgets'] = {'state': {}}
    edit_notebook(repo_copy / 'nbs' / '00_foundation' / '00_core.ipynb', dirty)
    r = check(repo_copy)
    assert r.returncode == 1 and 'notebooks are not clean' in r.stdout


def test_stale_readme_fails(repo_copy):
    (repo_copy / 'README.md').write_text((repo_copy / 'README.md').read_text() + '\nhand edit\n')
    r = check(repo_copy)
    assert r.returncode == 1 and 'README.md is out of sync with nbs/index.ipynb' in r.stdout


# The layer rule (.ci/layers.py): a module imports only from its own or lower layers, and no cycles.
LAYERS = REPO / '.ci' / 'layers.py'


def layers(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAYERS), str(root)], capture_output=True, text=True, timeout=120)


def test_repository_keeps_the_layer_rule():
    r = layers(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'layer check: OK' in r.stdout


def test_an_upward_import_fails_naming_both_layers(repo_copy):
    core = repo_copy / 'mlwork' / 'core.py'
    core.write_text(core.read_text() + '\n\ndef f():\n    from mlwork.models.train import TrainedModel\n    return TrainedModel\n')
    r = layers(repo_copy)
    assert r.returncode == 1
    assert 'mlwork.core (layer 0' in r.stdout and 'imports mlwork.models.train (layer 3' in r.stdout


def test_a_cycle_within_a_layer_fails(repo_copy):
    for name, other in (('audit', 'security'), ('security', 'audit')):
        f = repo_copy / 'mlwork' / f'{name}.py'
        f.write_text(f.read_text() + f'\n\ndef _g():\n    from . import {other}\n    return {other}\n')
    r = layers(repo_copy)
    assert r.returncode == 1 and 'import cycle among: mlwork.audit, mlwork.security' in r.stdout


def test_the_package_face_may_not_be_imported_by_a_module(repo_copy):
    rep = repo_copy / 'mlwork' / 'report.py'
    rep.write_text(rep.read_text() + '\n\ndef f():\n    import mlwork\n    return mlwork.DriftDetector\n')
    r = layers(repo_copy)
    assert r.returncode == 1 and 'imports the package face `mlwork`' in r.stdout


def test_a_module_without_a_notebook_fails(repo_copy):
    (repo_copy / 'mlwork' / 'stray.py').write_text('X = 1\n')
    r = layers(repo_copy)
    assert r.returncode == 1 and 'no notebook exports mlwork.stray' in r.stdout


def test_a_private_name_imported_across_modules_fails(repo_copy):
    rep = repo_copy / 'mlwork' / 'drift' / 'windows.py'
    rep.write_text(rep.read_text() + '\nfrom ..report import _is_num\n')
    r = layers(repo_copy)
    assert r.returncode == 1 and 'mlwork.drift.windows imports private name(s) _is_num from mlwork.report' in r.stdout


# The shape rule (.ci/shape.py): export cells at nbdev's size, an example after each definition, whole classes.
SHAPE = REPO / '.ci' / 'shape.py'


def shape(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SHAPE), str(root)], capture_output=True, text=True, timeout=120)


def test_repository_keeps_the_shape():
    r = shape(REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def _add_cells(nb_path: Path, *sources: str) -> None:
    def add(nb):
        at = len(nb['cells']) - 1  # before the hidden nbdev_export() cell
        for s in reversed(sources):
            nb['cells'].insert(at, {'cell_type': 'code', 'execution_count': None, 'id': 'added', 'metadata': {},
                                    'outputs': [], 'source': s.splitlines(keepends=True)})
    edit_notebook(nb_path, add)


def test_a_long_export_cell_fails(repo_copy):
    body = '\n'.join(f'    x{i} = {i}' for i in range(85))
    _add_cells(repo_copy / 'nbs' / '00_foundation' / '03_report.ipynb', f'#| export\ndef too_long():\n{body}\n    return x0', 'too_long()')
    r = shape(repo_copy)
    assert r.returncode == 1 and 'an export cell of 88 lines (at most 80) defining too_long' in r.stdout


def test_a_definition_without_an_example_fails(repo_copy):
    _add_cells(repo_copy / 'nbs' / '00_foundation' / '03_report.ipynb', '#| export\ndef lonely(): return 1', '#| export\ndef other(): return 2', 'other()')
    r = shape(repo_copy)
    assert r.returncode == 1 and 'lonely has no example after it' in r.stdout and 'other has no example' not in r.stdout


def test_a_method_attached_after_the_class_fails(repo_copy):
    mod = repo_copy / 'mlwork' / 'report.py'
    mod.write_text(mod.read_text() + '\n\ndef _extra(self): return 1\nReport.extra = _extra\nsetattr(Report, "more", _extra)\n')
    r = shape(repo_copy)
    assert r.returncode == 1 and 'Report.extra is assigned after the class body' in r.stdout
    assert 'setattr(...) at module level' in r.stdout
