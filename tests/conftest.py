"""Shared fixtures: the real `mlwork` executable, run as a user would run it."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
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
    """Run the installed `mlwork` console script in `cwd` with a clean env, as a new process."""
    assert MLWORK.exists(), f'the mlwork console script is not installed beside {sys.executable}'
    p = subprocess.run([str(MLWORK), *args], cwd=cwd, env=clean_env(env), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(p.returncode, p.stdout, p.stderr)


def run_mlwork_in_process(*args: str, cwd: Path, env: dict | None = None, timeout: float | None = None) -> Run:
    """`mlwork ARGS` through the console script's own entry point (`mlwork.cli.main.main`) in this process: the same
    parser, commands, output and exit code, in `cwd`, with the same clean environment — without starting a new Python
    for each call (each one imports MLflow, LightGBM and scikit-learn again: 3-6 s of CPU, most of a call's time).
    For the modules that make dozens of calls; what only a real process shows (a closed pipe, signals, start-up) is
    tested through `run_mlwork`. `timeout` is not enforced here (pytest-timeout still is)."""
    from mlwork.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    log = logging.getLogger('mlwork')   # the command sets up its own handler (not propagating): put the logger back after
    saved_log = (list(log.handlers), log.level, log.propagate)
    os.environ.clear()
    os.environ.update(clean_env(env))
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('default')   # each call shows its warnings, as a fresh process would
            code = main([str(a) for a in args])
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        log.handlers[:], log.propagate = saved_log[0], saved_log[2]
        log.setLevel(saved_log[1])   # setLevel, not the attribute: it also clears the loggers' cached levels
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(tmp_path):
    """Run the installed `mlwork` console script in a temporary folder (its cwd), with a clean env."""
    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> Run:
        return run_mlwork(*args, cwd=cwd or tmp_path, env=env, timeout=timeout)
    return run
