#!/usr/bin/env python3
"""Run the README's command-line walk-through as written, so a copied example cannot break.

Every ```sh block of README.md whose first line is `# walk-through` runs, in order, in one fresh temporary folder,
with `bash -euo pipefail` (each command echoed), the `mlwork` beside this Python first on PATH and no MLWORK_*
variables from the caller's environment.

Usage: python .ci/readme_cli.py [REPO_ROOT]   (exit 0: every block ran; 1: a command failed, shown with its output)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = '# walk-through'


def blocks(readme: str) -> list[str]:
    "The walk-through blocks of the README, in order."
    found = re.findall(r'^```sh\n(.*?)^```', readme, flags=re.S | re.M)
    return [b for b in found if b.lstrip().startswith(MARK)]


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent).resolve()
    scripts = blocks((root / 'README.md').read_text(encoding='utf-8'))
    if not scripts:
        print(f'README.md has no ```sh block starting with {MARK!r}: nothing to run')
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    with tempfile.TemporaryDirectory(prefix='mlwork-readme-') as tmp:
        for i, script in enumerate(scripts, 1):
            print(f'--- walk-through block {i} of {len(scripts)} (in {tmp})', flush=True)
            r = subprocess.run(['bash', '-euxo', 'pipefail', '-c', script], cwd=tmp, env=env, timeout=900,
                               stdin=subprocess.DEVNULL)
            if r.returncode:
                print(f'README walk-through block {i} failed with exit {r.returncode} (the command echoed last above)')
                return 1
    print(f'README walk-through: {len(scripts)} block(s) ran as written')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
