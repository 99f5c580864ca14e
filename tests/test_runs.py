"""`mlwork run`, `rerun`, `runs`: real papermill runs through the installed command, with failures, kills and locks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from conftest import MLWORK, clean_env

KERNELSPEC = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}


def toy(folder: Path, body: str, name: str = 'toy') -> Path:
    "A pipeline notebook: a parameters cell, then `body`."
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': KERNELSPEC})
    nb.cells = [nbformat.v4.new_markdown_cell(f'# {name}\n> A toy pipeline for the tests.'),
                nbformat.v4.new_code_cell("home: str = ''  # workspace\nn: int = 2  # a number\nlabel: str = None  # required: a label\n"
                                          "token_secret: str = 'env:TOY_TOKEN'  # an API token\nwait: float = 0.0  # seconds to sleep",
                                          metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(body)]
    p = folder / f'{name}.ipynb'
    nbformat.write(nb, p)
    return p


BODY = ("import time\nfrom mlwork.pipelines.context import record_metric, record_decision, secret\n"
        "time.sleep(wait)\nrecord_metric('double', n * 2)\nrecord_decision('gate', 'passed', f'{label}: {n} > 1')\n"
        "print('the token is', secret(token_secret))")


@pytest.fixture
def ws(cli, tmp_path):
    r = cli('init', '--home', str(tmp_path / 'ws'))
    assert r.code == 0, r.err
    return tmp_path / 'ws'


def test_run_writes_report_manifest_index_and_masks_secrets(cli, ws, tmp_path):
    nb = toy(tmp_path, BODY)
    r = cli('run', str(nb), '-p', 'n', '21', '-p', 'label', 'x', '--home', str(ws), '--json', env={'TOY_TOKEN': 'tok-98765-secret'})
    assert r.code == 0, r.err
    man = r.json()
    folder = Path(man['report_dir'])
    assert folder.parent == tmp_path / 'reports' and man['status'] == 'succeeded'
    assert man['metrics'] == {'double': 42} and man['decisions'] == [{'what': 'gate', 'decision': 'passed', 'why': 'x: 21 > 1'}]
    assert man['parameters']['token_secret'] == 'env:TOY_TOKEN' and man['parameters']['n'] == 21
    assert man['pipeline']['sha256'] and man['environment']['packages']['papermill'] and man['audit']['head']
    for f in ('notebook.ipynb', 'report.html', 'manifest.json'):
        text = (folder / f).read_text()
        assert 'tok-98765-secret' not in text, f          # the secret a cell printed is masked
    assert '***' in (folder / 'notebook.ipynb').read_text()
    assert json.loads((ws / 'runs' / man['run_id'] / 'manifest.json').read_text()) == man
    index = (tmp_path / 'reports' / 'index.html').read_text()
    assert man['run_id'] in index
    # runs list / show: the same run, in text and JSON
    ls = cli('runs', 'list', '--home', str(ws), '--json')
    assert [m['run_id'] for m in ls.json()['runs']] == [man['run_id']]
    show = cli('runs', 'show', man['run_id'][:20], '--home', str(ws))
    assert show.code == 0 and 'gate: passed' in show.out


@pytest.mark.parametrize('args, message', [
    (['-p', 'label', 'x', '-p', 'nn', '3'], "no parameter 'nn'"),
    (['-p', 'label', 'x', '-p', 'n', 'three'], "Parameter 'n' must be an integer. Got 'three'"),
    ([], "needs parameter 'label'"),
    (['-p', 'label', 'x', '-p', 'token_secret', 'hunter2-plain'], 'takes a reference (env:NAME or file:PATH)'),
])
def test_bad_parameters_fail_before_a_kernel_starts(cli, ws, tmp_path, args, message):
    r = cli('run', str(toy(tmp_path, BODY)), *args, '--home', str(ws))
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert 'hunter2-plain' not in r.err
    assert not (ws / 'runs').exists() or not list((ws / 'runs').glob('*/manifest.json'))   # no run started


def test_failing_cell_is_a_failed_run(cli, ws, tmp_path):
    nb = toy(tmp_path, "x = n + 1\nraise ValueError(f'bad batch {x}')", 'broken')
    r = cli('run', str(nb), '-p', 'label', 'x', '--home', str(ws), '--json')
    assert r.code == 1
    man = r.json()
    assert man['status'] == 'failed' and man['error']['ename'] == 'ValueError' and man['error']['evalue'] == 'bad batch 3'
    assert 'raise ValueError' in man['error']['source']
    html = (Path(man['report_dir']) / 'report.html').read_text()
    assert 'bad batch 3' in html and 'raise ValueError' in html   # the error and the cell, though code is hidden


def test_killed_run_is_marked_killed_and_lock_refuses_a_second(ws, tmp_path):
    nb = toy(tmp_path, BODY)
    env = clean_env({'TOY_TOKEN': 'tok-1234'})
    p = subprocess.Popen([str(MLWORK), 'run', str(nb), '-p', 'label', 'x', '-p', 'wait', '60', '--home', str(ws), '--no-progress'],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list((ws / 'runs').glob('*/manifest.json')):
            time.sleep(0.2)
        second = subprocess.run([str(MLWORK), 'run', str(nb), '-p', 'label', 'y', '--home', str(ws)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and 'already running' in second.stderr, second.stderr
        time.sleep(3)   # the kernel is executing now
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    (man_file,) = list((ws / 'runs').glob('*/manifest.json'))
    assert json.loads(man_file.read_text())['status'] == 'running'       # nobody updated it ...
    ls = subprocess.run([str(MLWORK), 'runs', 'list', '--home', str(ws), '--json'], cwd=tmp_path, env=env, capture_output=True, text=True)
    (run,) = json.loads(ls.stdout)['runs']
    assert run['status'] == 'killed'                                      # ... until the next `runs list`
    assert json.loads(man_file.read_text())['status'] == 'killed'
    # the lock went with the killed process: a new run starts
    again = subprocess.run([str(MLWORK), 'run', str(nb), '-p', 'label', 'z', '--home', str(ws), '--no-progress'], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_over_runs_one_pipeline_per_value_on_dask(cli, ws, tmp_path):
    r = cli('run', str(toy(tmp_path, BODY)), '-p', 'label', 'x', '--over', 'n=3,4', '--dask', '--home', str(ws), '--json',
            env={'TOY_TOKEN': 'tok-1234'})
    assert r.code == 0, r.err
    res = r.json()
    assert sorted(m['metrics']['double'] for m in res['runs']) == [6, 8]
    assert {m['batch']['id'] for m in res['runs']} == {res['batch']}
    assert all(m['batch']['worker'].startswith('tcp://') for m in res['runs'])      # ran on Dask workers
    assert all(Path(m['report_dir'], 'report.html').exists() for m in res['runs'])


def test_lab_starts_jupyterlab_on_the_workspace(ws, tmp_path):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([str(MLWORK), 'lab', '--home', str(ws), '--no-browser', '--port', str(port), '--',
                          '--ServerApp.token=t0k', '--ServerApp.ip=127.0.0.1', *(['--allow-root'] if os.geteuid() == 0 else [])],
                         cwd=tmp_path, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body, deadline = None, time.time() + 90
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/contents?token=t0k', timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                assert p.poll() is None, p.stdout.read()
                time.sleep(0.5)
        assert body is not None, 'JupyterLab did not answer'
        names = {c['name'] for c in body['content']}
        assert {'tour.ipynb', 'drift.ipynb', 'train.ipynb'} <= names      # the pipelines and the tour, in the workspace
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/lab?token=t0k', timeout=10) as r:
            assert r.status == 200
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
