"""Test helpers for the scoring service: a workspace with a champion and a challenger, keys for every role, and a real
`mlwork serve` process on a free loopback port."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import MLWORK, clean_env

FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months', 'loan_amount', 'loan_purpose', 'employment']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@dataclass
class Workspace:
    home: Path
    keys: dict[str, str]  # role -> secret
    rows: list[dict]  # feature rows to score
    labels: list[int] = field(default_factory=list)


def make_workspace(home: Path, *, challenger: bool = True, rows: int = 2_000) -> Workspace:
    """A workspace with `credit` v1 as champion and v2 as challenger, and one API key per role."""
    from mlwork import Registry, generate, init_workspace, train_model
    from mlwork.serve.access import ROLES, KeyStore
    ws = init_workspace(home).workspace
    data = generate('credit', n_rows=rows, seed=3).frame
    reg = Registry(ws)
    reg.publish(train_model(data, 'repaid', features=FEATURES[:5], num_boost_round=20, early_stopping_rounds=None),
                'credit', alias='champion')
    if challenger:
        reg.publish(train_model(data, 'repaid', features=FEATURES, num_boost_round=30, early_stopping_rounds=None, seed=1),
                    'credit', alias='challenger')
    store = KeyStore(ws)
    keys = {role: store.create(f'test-{role}', role)[1] for role in ROLES}
    return Workspace(home, keys, data.select(FEATURES).to_dicts(), data['repaid'].to_list())


class Server:
    """`mlwork serve` in a child process (its own session), ready when /ready answers 200."""

    def __init__(self, home: Path, model: str = 'credit', *args: str, port: int | None = None, scheme: str = 'http',
                 verify: object = True, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.url = f'{scheme}://127.0.0.1:{self.port}'
        self.log_path = Path(home).parent / f'server-{self.port}.log'
        self.log = open(self.log_path, 'w')
        cmd = [str(MLWORK), 'serve', model, '--home', str(home), '--port', str(self.port), '--poll', '0.2', *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=clean_env(env),
                                     start_new_session=True, stdin=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=self.url, verify=verify, timeout=30)
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f'mlwork serve exited with {self.proc.returncode}:\n{self.output()}')
            try:
                if self.client.get('/ready').status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f'mlwork serve was not ready after {timeout} s:\n{self.output()}')

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors='replace')

    def headers(self, secret: str | None) -> dict[str, str]:
        return {'Authorization': f'Bearer {secret}'} if secret else {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.client.close()
        self.log.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cli_json(*args: str) -> dict:
    p = subprocess.run([str(MLWORK), *args, '--json'], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)
