#!/usr/bin/env python3
"""Check the shape of the literate source (STYLE.md): export cells at nbdev's size, whole classes, examples beside
definitions.

- every `#| export` cell has at most MAX_LINES lines;
- an export cell that defines a public function or class is followed by a code cell that is not an export cell
  (its example, which is also a test) before the next export cell that defines a public name (private helpers a
  class delegates to may sit between the class and its example);
- no class is assembled after the fact: in the exported modules, no module-level `Cls.name = ...` for a class defined
  there and no module-level `setattr(...)`.

Usage: python .ci/shape.py [REPO_ROOT]   (exit 0: the shape holds; 1: each problem listed)
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

MAX_LINES = 80
EXPORT = re.compile(r'^#\|\s*export\s*$', re.M)


def public_names(src: str) -> list[str]:
    "Top-level public functions and classes an export cell defines."
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    return [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith('_')]


def notebook_problems(nb_path: Path, root: Path) -> list[str]:
    cells = json.loads(nb_path.read_text(encoding='utf-8'))['cells']
    code = [(i, ''.join(c['source'])) for i, c in enumerate(cells) if c['cell_type'] == 'code']
    rel = nb_path.relative_to(root)
    out: list[str] = []
    for k, (i, src) in enumerate(code):
        first = src.split('\n', 1)[0]
        if not EXPORT.match(first):
            continue
        n = len(src.splitlines())
        names = public_names(src)
        if n > MAX_LINES:
            out.append(f'{rel} cell {i}: an export cell of {n} lines (at most {MAX_LINES}) defining '
                       f'{", ".join(names) or "no public name"}: split it, or make methods delegate')
        if names:
            # its example may follow the private helpers it delegates to, but must come before the next public definition
            example = False
            for _, later in code[k + 1:]:
                if not EXPORT.match(later.split('\n', 1)[0]):
                    example = True
                    break
                if public_names(later):
                    break
            if not example:
                out.append(f'{rel} cell {i}: {", ".join(names)} has no example after it (add a code cell that uses it)')
    return out


def module_problems(path: Path, root: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding='utf-8'))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    rel = path.relative_to(root)
    out: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in classes:
                out.append(f'{rel}:{node.lineno}: {t.value.id}.{t.attr} is assigned after the class body: declare it inside')
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == 'setattr'] \
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []
        out.extend(f'{rel}:{c.lineno}: setattr(...) at module level assembles a class after the fact' for c in calls)
    return out


def check(root: Path) -> list[str]:
    problems: list[str] = []
    for nb in sorted((root / 'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' not in nb.parts:
            problems += notebook_problems(nb, root)
    for py in sorted((root / 'mlwork').rglob('*.py')):
        if py.name != '_modidx.py':
            problems += module_problems(py, root)
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent).resolve()
    problems = check(root)
    for p in problems:
        print(p)
    print(f'shape check: {"FAILED, " + str(len(problems)) + " problem(s)" if problems else "OK"}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
