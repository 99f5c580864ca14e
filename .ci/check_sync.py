#!/usr/bin/env python3
"""Check that the library is what its notebooks export, that the notebooks are clean, and that
README.md is what nbs/index.ipynb renders to. Works on a copy, so the working tree is never touched.

Usage: python .ci/check_sync.py [REPO_ROOT]   (exit 0: in sync; 1: out of sync, with a diff)
Needs nbdev_export and nbdev_clean on PATH or beside this Python.
"""
from __future__ import annotations

import difflib
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def tree_diff(a: Path, b: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Unified diffs of files (with the given suffixes) that differ between folders a and b."""
    out: list[str] = []
    names = {p.relative_to(a) for p in a.rglob('*') if p.suffix in suffixes and '__pycache__' not in p.parts}
    names |= {p.relative_to(b) for p in b.rglob('*') if p.suffix in suffixes and '__pycache__' not in p.parts}
    for rel in sorted(names):
        pa, pb = a / rel, b / rel
        if pa.exists() and pb.exists() and filecmp.cmp(pa, pb, shallow=False):
            continue
        la = pa.read_text(encoding='utf-8').splitlines(keepends=True) if pa.exists() else []
        lb = pb.read_text(encoding='utf-8').splitlines(keepends=True) if pb.exists() else []
        out.extend(difflib.unified_diff(la, lb, f'committed/{rel}', f'expected/{rel}', n=2))
        if not out or not out[-1].endswith('\n'):
            out.append('\n')
    return out


def main(root: Path) -> int:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix='mlwork-sync-') as tmp:
        work = Path(tmp) / 'repo'
        work.mkdir()
        for name in ('settings.ini', 'nbs', 'mlwork'):
            src = root / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
        # 1. nbdev_export must leave the library unchanged.
        r = subprocess.run([tool('nbdev_export')], cwd=work, capture_output=True, text=True)
        if r.returncode:
            problems.append(f'nbdev_export failed:\n{r.stdout}{r.stderr}')
        else:
            d = tree_diff(root / 'mlwork', work / 'mlwork', ('.py',))
            if d:
                problems.append('mlwork/ is out of sync with nbs/: run `nbdev_export` and commit the notebooks '
                                'and the library together.\n' + ''.join(d[:200]))
        # 2. nbdev_clean must leave the notebooks unchanged.
        r = subprocess.run([tool('nbdev_clean'), '--fname', str(work / 'nbs')], cwd=work, capture_output=True, text=True)
        if r.returncode:
            problems.append(f'nbdev_clean failed:\n{r.stdout}{r.stderr}')
        else:
            d = tree_diff(root / 'nbs', work / 'nbs', ('.ipynb',))
            if d:
                problems.append('notebooks are not clean: run `nbdev_clean` and commit them.\n' + ''.join(d[:200]))
    # 3. README.md must be what nbs/index.ipynb renders to.
    r = subprocess.run([sys.executable, str(HERE / 'readme.py'), '--check', str(root)], capture_output=True, text=True)
    if r.returncode:
        problems.append(r.stdout + r.stderr)
    for p in problems:
        print(p.rstrip() + '\n')
    print('sync check: ' + ('FAILED' if problems else 'library, notebooks and README are in sync'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent).resolve()))
