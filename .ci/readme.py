#!/usr/bin/env python3
"""Render README.md from nbs/index.ipynb (nbdev's readme_nb), without Quarto.

Markdown cells are copied; code cells become ```python blocks with nbdev's `#|` directives removed;
cells marked `#| hide` are left out; text outputs saved in the notebook follow their cell.

Usage: python .ci/readme.py [--check] [REPO_ROOT]   (--check: exit 1 if README.md differs)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FOOTER = '\n<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n'


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    parts: list[str] = []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        lines = src.splitlines()
        directives = [l.strip() for l in lines if l.strip().startswith('#|')]
        if any(d.replace(' ', '') in ('#|hide', '#|export', '#|exporti', '#|default_exp') or d.startswith('#| default_exp') for d in directives):
            continue
        if cell['cell_type'] == 'markdown':
            parts.append(src.strip() + '\n')
        elif cell['cell_type'] == 'code':
            code = '\n'.join(l for l in lines if not l.strip().startswith('#|')).strip()
            if code:
                parts.append(f'```python\n{code}\n```\n')
            texts = []
            for out in cell.get('outputs', []):
                if out.get('output_type') == 'stream':
                    texts.append(''.join(out['text']))
                elif 'text/plain' in out.get('data', {}):
                    texts.append(''.join(out['data']['text/plain']))
            if texts:
                parts.append('```\n' + ''.join(t if t.endswith('\n') else t + '\n' for t in texts) + '```\n')
    return '\n'.join(parts) + FOOTER


def main(argv: list[str]) -> int:
    check = '--check' in argv
    rest = [a for a in argv if a != '--check']
    root = Path(rest[0] if rest else Path(__file__).resolve().parent.parent)
    text = render(root / 'nbs' / 'index.ipynb')
    readme = root / 'README.md'
    if check:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print('README.md is out of sync with nbs/index.ipynb: run `python .ci/readme.py` and commit README.md.')
            return 1
        return 0
    readme.write_text(text, encoding='utf-8')
    print(f'wrote {readme}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
