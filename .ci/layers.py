#!/usr/bin/env python3
"""Check the layer rule: no module imports from a higher layer, no import cycles, no private names across modules.

A module's layer is the tens digit of the number of the notebook that exports it (DESIGN.md): `nbs/20_drift/20c_windows.ipynb`
with `#| default_exp drift.windows` puts `mlwork.drift.windows` in layer 2. Every import of an mlwork module counts,
at module level or inside a function, absolute or relative. The package's face (`mlwork/__init__.py`) sits above every
layer; a module may read only `mlwork.__version__` or `mlwork.__file__` from it. A module never imports another
module's private (`_name`) names: what is shared is public and documented where it is defined.

Usage: python .ci/layers.py [REPO_ROOT]   (exit 0: the rule holds; 1: violations listed)
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT_ATTRS = {'__version__', '__file__'}


def module_layers(root: Path, lib: str = 'mlwork') -> dict[str, tuple[int, str]]:
    "Module name -> (layer, notebook) from each notebook's `#| default_exp` and number."
    out: dict[str, tuple[int, str]] = {}
    for nb in sorted((root / 'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts:
            continue
        m = re.match(r'(\d)(\d)', nb.name)
        if not m:
            continue
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        for cell in cells:
            src = ''.join(cell['source'])
            d = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
            if cell['cell_type'] == 'code' and d:
                name = d.group(1).removesuffix('.__init__')
                out[f'{lib}.{name}'] = (int(m.group(1)), str(nb.relative_to(root)))
                break
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    "The absolute module an ImportFrom names."
    if not node.level:
        return node.module or ''
    base = module.split('.') if is_pkg else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def imports(path: Path, module: str, lib: str = 'mlwork') -> list[tuple[str, int, set[str]]]:
    "(imported module, line, names taken from it) for every import of the library in one file."
    tree = ast.parse(path.read_text(encoding='utf-8'))
    is_pkg = path.name == '__init__.py'
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == lib or a.name.startswith(lib + '.'):
                    found.append((a.name, node.lineno, {'*'} if a.name == lib else set()))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            if target == lib or target.startswith(lib + '.'):
                found.append((target, node.lineno, {a.name for a in node.names}))
    return found


def _root_use_ok(path: Path, lib: str) -> bool:
    "`import mlwork` only to read mlwork.__version__ / mlwork.__file__."
    tree = ast.parse(path.read_text(encoding='utf-8'))
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id == lib:
            p = parents.get(n)
            if not (isinstance(p, ast.Attribute) and p.attr in ROOT_ATTRS):
                return False
    return True


def owner(name: str, layers: dict[str, tuple[int, str]]) -> str | None:
    "The known module that `name` is or lies in (longest prefix), if any."
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        cand = '.'.join(parts[:i])
        if cand in layers:
            return cand
    return None


def check(root: Path, lib: str = 'mlwork') -> list[str]:
    layers = module_layers(root, lib)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in layers}
    for path in sorted((root / lib).rglob('*.py')):
        rel = path.relative_to(root).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        module = '.'.join(parts)
        if module == lib or path.name == '_modidx.py':
            continue  # the face and nbdev's index sit above every layer
        if path.name == '__init__.py' and not path.read_text(encoding='utf-8').strip():
            continue
        if module not in layers:
            problems.append(f'{path.relative_to(root)}: no notebook exports {module} (add `#| default_exp` to a numbered notebook)')
            continue
        layer, nb = layers[module]
        found = imports(path, module, lib)
        # `from mlwork.drift import univariate` imports the module mlwork.drift.univariate
        found += [(f'{t}.{n}', line, set()) for t, line, names in found for n in names if f'{t}.{n}' in layers]
        for target, line, names in found:
            if target == lib:
                names = {n for n in names if f'{lib}.{n}' not in layers and not (root / lib / n).is_dir()}
                if names - ROOT_ATTRS and not ('*' in names and _root_use_ok(path, lib)):
                    problems.append(f'{path.relative_to(root)}:{line}: imports the package face `{lib}` '
                                    f'({", ".join(sorted(names))}); import from the defining module instead')
                continue
            dep = owner(target, layers)
            if dep is None:
                if not (root / Path(*target.split('.'))).is_dir():  # a subpackage (its face) is not a module of its own
                    problems.append(f'{path.relative_to(root)}:{line}: imports {target}, which no notebook exports')
                continue
            if dep == module:
                continue
            private = sorted(n for n in names if n.startswith('_') and not n.startswith('__'))
            if private:
                problems.append(f'{path.relative_to(root)}:{line}: {module} imports private name(s) {", ".join(private)} '
                                f'from {dep}: make them public (documented) where they are defined, or move them')
            graph[module].add(dep)
            dlayer, dnb = layers[dep]
            if dlayer > layer:
                problems.append(f'{path.relative_to(root)}:{line}: {module} (layer {layer}, {nb}) imports {dep} '
                                f'(layer {dlayer}, {dnb}): a module may import only from its own or lower layers')
    problems.extend(f'import cycle among: {", ".join(c)}' for c in cycles(graph))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "The modules of each strongly connected component with more than one module (Tarjan): each lies on a cycle."
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent).resolve()
    problems = check(root)
    for p in problems:
        print(p)
    n = len(module_layers(root))
    print(f'layer check: {"FAILED, " + str(len(problems)) + " problem(s)" if problems else "OK"} ({n} modules)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
