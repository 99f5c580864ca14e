"""`mlwork schedule`: the generated definitions validate against their systems' schemas, and `serve` keeps its
promises in a real process (no overlapping runs, missed runs reported, clean SIGTERM shutdown)."""
from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from croniter import croniter

from mlwork.core import init_workspace
from mlwork.schedule.files import (airflow_dag_text, crontab_text, github_workflow_text, kubernetes_yaml_text,
                                   parse_schedule, write_definition)

BIN = Path(sys.executable).parent
PIPES = ['drift', 'evaluate', 'ingest', 'promote', 'train', 'validate']
ENTRIES = [{'name': 'nightly-drift', 'pipeline': 'drift', 'cron': '30 2 * * *', 'params': {'current': 'acs@latest'}},
           {'name': 'weekly-train', 'pipeline': 'train', 'cron': '@weekly', 'timezone': 'Europe/Paris',
            'params': {'seed': 3, 'dry_run': True, 'note': '50% off; "quoted"'}},
           {'name': 'gate-eval', 'pipeline': 'evaluate', 'cron': '0 4 * * 1-5'},
           {'name': 'validate', 'pipeline': 'validate', 'cron': '15 1 * * *', 'params': {'batch': 'acs@latest'}}]

MLWORK = str(Path(sys.executable).parent / 'mlwork')  # the installed command

# stands for `mlwork run`: logs its start and end, sleeps `-p sleep S`
FAKE = '''import json, os, sys, time
args = sys.argv[1:]
secs = float(args[args.index('sleep') + 1]) if 'sleep' in args else 0.0
def note(event):
    with open(os.environ['FAKE_LOG'], 'a') as f:
        f.write(json.dumps({'entry': os.environ['MLWORK_SCHEDULE_ENTRY'], 'event': event, 't': time.time(), 'argv': args}) + '\\n')
note('start')
time.sleep(secs)
note('end')
'''


@pytest.fixture(scope='module')
def schedule():
    return parse_schedule({'entries': ENTRIES}, source='/ws/schedule.yaml', pipelines=PIPES)


# ---- the generated files ---------------------------------------------------------------------------------------

def test_crontab_lines_parse(schedule):
    tab = crontab_text(schedule, mlwork='/venv/bin/mlwork', home='/ws', workdir='/proj',
                       log_dir='/ws/schedule/logs', lock_dir='/ws/schedule/locks')
    jobs = [l for l in tab.splitlines() if l and not l.startswith('#') and not l.split()[0].count('=')]
    assert len(jobs) == len(ENTRIES)
    for line in jobs:
        fields = line.split()
        assert croniter.is_valid(' '.join(fields[:5])), line
        command = line.split(None, 5)[5]
        assert '%' not in command.replace('\\%', ''), f'an unescaped % (cron makes it a newline): {line}'
        words = shlex.split(command.replace('\\%', '%'))
        lock = words.index('flock')
        assert words[lock + 1:lock + 4] == ['-n', '-E', '75'] and words[lock + 5:lock + 7] == ['/venv/bin/mlwork', 'run']
    train = next(shlex.split(l.split(None, 5)[5].replace('\\%', '%')) for l in jobs if 'weekly-train' in l)
    assert train[train.index('run'):train.index('>>')] == [
        'run', 'train', '-p', 'seed', '3', '-p', 'dry_run', 'true', '-p', 'note', '50% off; "quoted"', '--home', '/ws']
    assert 'CRON_TZ=Europe/Paris' in tab.splitlines()


def test_airflow_dag_structure(schedule):
    tree = ast.parse(airflow_dag_text(schedule, home='/ws', output_dir='/ws/reports/airflow'))
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ('airflow.providers.papermill.operators.papermill', 'PapermillOperator') in imports
    dags = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'DAG']
    tasks = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'PapermillOperator']
    assert len(dags) == len(tasks) == len(ENTRIES)
    for dag, task, entry in zip(dags, tasks, schedule.entries):
        d = {k.arg: k.value for k in dag.keywords}
        t = {k.arg: k.value for k in task.keywords}
        assert ast.literal_eval(d['schedule']) == entry.cron and ast.literal_eval(d['max_active_runs']) == 1
        assert ast.literal_eval(t['task_id']) == entry.name
        assert ast.literal_eval(t['parameters']) == {**entry.params, 'home': '/ws'}
        assert f"'{entry.pipeline}.ipynb'" in ast.unparse(t['input_nb'])
        assert {'input_nb', 'output_nb', 'parameters', 'kernel_name'} <= set(t)


def test_kubernetes_cronjobs_validate(schedule, tmp_path):
    path = write_definition('kubernetes', schedule, tmp_path, image='registry.example/mlwork:1.0', namespace='ml')
    p = subprocess.run([str(BIN / 'kubernetes-validate'), '--strict', str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count('passed') == len(ENTRIES)
    docs = list(yaml.safe_load_all(path.read_text()))
    assert {d['spec']['concurrencyPolicy'] for d in docs} == {'Forbid'}
    c = docs[0]['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]
    assert c['command'] == ['mlwork', 'run', 'drift', '-p', 'current', 'acs@latest', '--home', '/workspace']


def test_kubernetes_validate_rejects_a_broken_cronjob(schedule, tmp_path):
    """The validator can fail: a CronJob without its job template does not pass."""
    docs = list(yaml.safe_load_all(kubernetes_yaml_text(schedule)))
    del docs[0]['spec']['jobTemplate']
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump_all(docs))
    p = subprocess.run([str(BIN / 'kubernetes-validate'), '--strict', str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and 'jobTemplate' in p.stdout + p.stderr


def test_github_workflow_validates(schedule, tmp_path):
    path = write_definition('github', schedule, tmp_path, install='pip install -e .')
    p = subprocess.run([str(BIN / 'check-jsonschema'), '--builtin-schema', 'vendor.github-workflows', str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    flow = yaml.safe_load(path.read_text())
    runs = [s.get('run', '') for s in flow['jobs']['gate']['steps']]
    order = [next(i for i, r in enumerate(runs) if r.startswith(f'mlwork run {x}')) for x in ('validate', 'train', 'evaluate', 'promote')]
    assert order == sorted(order)
    steps = flow['jobs']['gate']['steps']
    check, promote = steps[order[-1]], steps[order[-1] + 1]
    assert check['if'] == "github.event_name == 'pull_request'" and promote['if'] == "github.event_name != 'pull_request'"
    words = shlex.split(promote['run'])
    assert words[words.index('fail_if_refused') + 1] == 'true' and words[words.index('force') + 1] == 'false'
    assert 'dry_run' not in words and shlex.split(check['run'])[-3:] == ['true', '--home', '.mlwork']
    assert 'fail_on_block' in runs[order[0]]
    assert {'cron': '0 4 * * 1-5'} in flow['on']['schedule'] and {'cron': '30 2 * * *'} not in flow['on']['schedule']
    bad = tmp_path / 'bad.yml'
    bad.write_text(github_workflow_text(schedule).replace('runs-on:', 'runs_on:'))
    p = subprocess.run([str(BIN / 'check-jsonschema'), '--builtin-schema', 'vendor.github-workflows', str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0


def test_seconds_cron_refused_for_files():
    fast = parse_schedule({'entries': [{'name': 'fast', 'pipeline': 'drift', 'cron': '* * * * * */5'}]}, pipelines=PIPES)
    with pytest.raises(ValueError, match='fast: a cron with a seconds field'):
        kubernetes_yaml_text(fast)


# ---- the command line ------------------------------------------------------------------------------------------

def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    return subprocess.run([MLWORK, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def workspace(tmp_path: Path, entries: list[dict]) -> Path:
    home = init_workspace(tmp_path / 'ws').workspace.root
    (home / 'schedule.yaml').write_text(yaml.safe_dump({'entries': entries}))
    return home


def test_bad_schedule_is_a_usage_error_naming_the_entry(tmp_path):
    home = workspace(tmp_path, [{'name': 'nightly', 'pipeline': str(tmp_path / 'x.ipynb'), 'cron': '0 26 * * *', 'parms': {}},
                                {'name': 'nightly', 'pipeline': str(tmp_path / 'x.ipynb'), 'cron': '0 2 * * *'}])
    (tmp_path / 'x.ipynb').write_text('{}')
    p = cli('schedule', 'cron', '--home', str(home), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1
    for part in ("entry 'nightly': bad cron expression '0 26 * * *'", "unknown key 'parms' (did you mean 'params'?)",
                 "entry 'nightly': the name is used 2 times"):
        assert part in err, err
    p = cli('schedule', 'list', '--home', str(home), '--file', str(tmp_path / 'none.yaml'), cwd=tmp_path)
    assert p.returncode == 2 and 'No schedule at' in p.stderr


def test_cli_writes_each_format(tmp_path):
    (tmp_path / 'train.ipynb').write_text('{}')
    home = workspace(tmp_path, [{'name': 'train', 'pipeline': str(tmp_path / 'train.ipynb'), 'cron': '0 3 * * 1'}])
    for fmt, name in (('cron', 'mlwork.crontab'), ('airflow', 'mlwork_schedule_dag.py'),
                      ('kubernetes', 'mlwork-cronjobs.yaml'), ('github', 'mlwork-gate.yml')):
        p = cli('schedule', fmt, '--home', str(home), '--out', str(tmp_path / 'out'), '--json', cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)['path'] == str(tmp_path / 'out' / name)
    assert 'flock -n' in (tmp_path / 'out' / 'mlwork.crontab').read_text()


# ---- serve in a real process -----------------------------------------------------------------------------------

def serve(tmp_path: Path, home: Path, *args: str) -> subprocess.Popen:
    fake = tmp_path / 'fake_run.py'
    fake.write_text(FAKE)
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
    env['FAKE_LOG'] = str(tmp_path / 'fake.jsonl')
    return subprocess.Popen([MLWORK, 'schedule', 'serve', '--home', str(home), '--json',
                             '--command', f'{sys.executable} {fake}', *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fake_log(tmp_path: Path) -> list[dict]:
    f = tmp_path / 'fake.jsonl'
    return [json.loads(l) for l in f.read_text().splitlines()] if f.exists() else []


def events(home: Path) -> list[dict]:
    return [json.loads(l) for l in (home / 'schedule' / 'events.jsonl').read_text().splitlines()]


def wait_for(pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, 'timed out waiting'
        time.sleep(0.05)


def test_serve_never_overlaps_an_entry_and_reports_skips(tmp_path):
    every = '* * * * * *'  # every second: each run (2.5 s) outlasts its period
    home = workspace(tmp_path, [{'name': 'slow', 'pipeline': 'drift', 'cron': every, 'params': {'sleep': 2.5}},
                                {'name': 'other', 'pipeline': 'drift', 'cron': every, 'params': {'sleep': 2.5}}])
    (tmp_path / 'schedule.yaml').write_text('')  # not this one: --home's is read
    p = serve(tmp_path, home, '--max-runs', '4')
    out, err = p.communicate(timeout=40)
    assert p.returncode == 0, err
    summary = json.loads(out)
    log = fake_log(tmp_path)
    for name in ('slow', 'other'):
        spans = [(a['t'], b['t']) for a, b in zip([e for e in log if e['entry'] == name and e['event'] == 'start'],
                                                   [e for e in log if e['entry'] == name and e['event'] == 'end'])]
        assert len(spans) == 2
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:])), spans
        assert any(s['entry'] == name and s['reason'] == 'still running' for s in summary['skipped'])
    starts = sorted(e['t'] for e in log if e['event'] == 'start')
    assert starts[1] - starts[0] < 1.5  # different entries do run side by side
    assert {r['status'] for r in summary['runs']} == {'succeeded'} and summary['reason'] == 'max-runs'
    assert 'skipped: still running' in err
    state = json.loads((home / 'schedule' / 'state.json').read_text())
    assert state['entries']['slow']['skipped'] >= 1 and state['entries']['slow']['runs'] == 2


def test_serve_reports_runs_missed_while_down(tmp_path):
    home = workspace(tmp_path, [{'name': 'tick', 'pipeline': 'drift', 'cron': '* * * * * */2'}])
    p = serve(tmp_path, home, '--once')
    assert p.wait(timeout=20) == 0
    state_file = home / 'schedule' / 'state.json'
    state = json.loads(state_file.read_text())
    state['entries']['tick']['next_due'] = (datetime.now(timezone.utc) - timedelta(seconds=40)).replace(microsecond=0).isoformat()
    state_file.write_text(json.dumps(state))
    p = serve(tmp_path, home, '--once', '--misfire-grace', '3')
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    missed = json.loads(out)['missed']
    assert len(missed) == 1 and missed[0]['reason'] == 'scheduler not running' and 17 <= missed[0]['count'] <= 21, missed
    assert 'missed' in err and [e for e in events(home) if e['event'] == 'missed'][0]['count'] == missed[0]['count']
    assert json.loads(state_file.read_text())['entries']['tick']['missed'] == missed[0]['count']


def test_serve_reports_runs_missed_while_suspended(tmp_path):
    home = workspace(tmp_path, [{'name': 'tick', 'pipeline': 'drift', 'cron': '* * * * * *'}])
    p = serve(tmp_path, home, '--duration', '7', '--misfire-grace', '1')
    wait_for(lambda: len(fake_log(tmp_path)) >= 2)
    p.send_signal(signal.SIGSTOP)  # the machine is busy: the scheduler does not get the CPU for 4 s
    time.sleep(4)
    p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    missed = json.loads(out)['missed']
    assert missed and all('late' in m['reason'] for m in missed) and sum(m['count'] for m in missed) >= 2, missed


def test_sigterm_waits_for_the_running_pipeline_then_exits_0(tmp_path):
    home = workspace(tmp_path, [{'name': 'job', 'pipeline': 'drift', 'cron': '* * * * * *', 'params': {'sleep': 2}}])
    p = serve(tmp_path, home, '--grace', '20')
    wait_for(lambda: any(e['event'] == 'start' for e in fake_log(tmp_path)))
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    summary = json.loads(out)
    assert summary['reason'] == 'SIGTERM' and [r['status'] for r in summary['runs']] == ['succeeded']
    assert [e['event'] for e in fake_log(tmp_path)] == ['start', 'end']  # it finished, and nothing new started
    assert json.loads((home / 'schedule' / 'state.json').read_text())['scheduler']['reason'] == 'SIGTERM'


def test_sigterm_terminates_a_pipeline_past_the_grace(tmp_path):
    home = workspace(tmp_path, [{'name': 'job', 'pipeline': 'drift', 'cron': '* * * * * *', 'params': {'sleep': 60}}])
    p = serve(tmp_path, home, '--grace', '1')
    wait_for(lambda: any(e['event'] == 'started' for e in events(home)) if (home / 'schedule' / 'events.jsonl').exists() else False)
    pid = next(e['pid'] for e in events(home) if e['event'] == 'started')
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert time.monotonic() - t0 < 10
    run = json.loads(out)['runs'][0]
    assert run['status'] == 'terminated by the scheduler' and run['exit_code'] == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert [e['event'] for e in fake_log(tmp_path)] == ['start']


def test_one_scheduler_per_workspace(tmp_path):
    home = workspace(tmp_path, [{'name': 'job', 'pipeline': 'drift', 'cron': '0 3 * * *'}])
    first = serve(tmp_path, home, '--duration', '20')
    wait_for(lambda: (home / 'schedule' / 'state.json').exists())
    second = cli('schedule', 'serve', '--home', str(home), '--once', cwd=tmp_path)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=20) == 0
    assert second.returncode == 2 and f'(pid {first.pid}) is serving' in second.stderr, second.stderr
