"""Shared fixtures: the real `mlwork` executable, run as a user would run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MLWORK = Path(sys.executable).parent / 'mlwork'


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def clean_env(extra: dict | None = None) -> dict:
    """The environment without MLWORK_* variables, plus `extra`."""
    e = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    e.update(extra or {})
    return e


def run_mlwork(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> Run:
    """Run the installed `mlwork` console script in `cwd` with a clean env."""
    assert MLWORK.exists(), f'the mlwork console script is not installed beside {sys.executable}'
    p = subprocess.run([str(MLWORK), *args], cwd=cwd, env=clean_env(env), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def cli(tmp_path):
    """Run the installed `mlwork` console script in a temporary folder (its cwd), with a clean env."""
    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> Run:
        return run_mlwork(*args, cwd=cwd or tmp_path, env=env, timeout=timeout)
    return run
