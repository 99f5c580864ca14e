"""Cost (mlwork.monitor.cost): process accounting checked against the clocks Python keeps itself (time.process_time, a
child's own report), prices from a real workspace's mlwork.toml, and money checked against exact decimal arithmetic."""
from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal

import polars as pl
import pytest

from mlwork.core import ConfigError, InvalidParameter, NotFound, init_workspace
from mlwork.monitor.cost import Prices, ProcessSeconds, cost_rows, process_seconds
from mlwork.monitor.metrics import METRIC_COLUMNS, metric_frame


def _busy(seconds: float) -> None:
    t = time.process_time()
    while time.process_time() - t < seconds:
        sum(i * i for i in range(1000))


def test_busy_loop_is_counted_like_process_time():
    for target in (0.2, 0.5):
        start, p0 = process_seconds(), time.process_time()
        _busy(target)
        used, p1 = process_seconds() - start, time.process_time()
        assert used.cpu == pytest.approx(p1 - p0, abs=0.02), (used, p1 - p0)
        assert used.cpu >= target - 0.01 and used.wall >= used.cpu * 0.5


def test_sleep_costs_no_cpu():
    start = process_seconds()
    time.sleep(0.3)
    used = process_seconds() - start
    assert used.wall >= 0.3 and used.cpu < 0.05


def test_finished_children_are_counted():
    "RUSAGE_CHILDREN: a waited-for child's CPU time shows up in the parent's reading, not in time.process_time."
    start, p0 = process_seconds(), time.process_time()
    code = 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\nprint(time.process_time())'
    child_cpu = float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)
    used = process_seconds() - start
    assert time.process_time() - p0 < 0.1
    assert used.cpu >= child_cpu - 0.02 and used.cpu <= child_cpu + 0.3, (used.cpu, child_cpu)


def test_another_process_by_pid():
    "The serving side: a running service's accounting read from /proc, equal to what the process says it used."
    code = ('import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n'
            'print(time.process_time(), flush=True)\ntime.sleep(30)')
    child = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        said = float(child.stdout.readline())
        seen = process_seconds(child.pid)
        assert seen.pid == child.pid and seen.cpu == pytest.approx(said, abs=0.03), (seen, said)
    finally:
        child.kill()
        child.wait()
    with pytest.raises(NotFound, match=f'no process {child.pid}'):
        process_seconds(child.pid)


def test_known_seconds_and_prices_give_exact_money():
    prices = Prices(cpu_hour=0.05, gpu_hour=2.5, currency='USD')
    for cpu, gpu, n in [(7200.0, 0.0, 10_000), (1234.5, 60.0, 777), (0.25, 0.0, 3), (86_400.0, 3600.0, 1_000_000)]:
        rows = cost_rows('run1', 'churn', cpu, n, prices, gpu_seconds=gpu, version=2, arm='champion')
        got = dict(zip(rows['metric'], rows['value']))
        money = Decimal(str(cpu)) / 3600 * Decimal('0.05') + Decimal(str(gpu)) / 3600 * Decimal('2.5')
        assert got['money'] == pytest.approx(float(money), rel=1e-13, abs=0)
        assert got['money_per_1k_predictions'] == pytest.approx(float(money * 1000 / n), rel=1e-13, abs=0)
        assert got['cpu_seconds_per_1k_predictions'] == pytest.approx(float(Decimal(str(cpu)) * 1000 / n), rel=1e-13, abs=0)
        assert got['cpu_seconds'] == cpu and ('gpu_seconds' in got) == bool(gpu)
        assert rows.schema == pl.Schema(METRIC_COLUMNS) and set(rows['kind']) == {'cost'} and set(rows['n']) == {n}
        assert rows.filter(pl.col('metric').str.starts_with('money'))['group'].unique().to_list() == ['USD']
    assert cost_rows('r', 'm', 7200.0, 10_000, prices)['value'].to_list()[1] == 0.1


def test_rows_join_the_metric_table_and_a_measured_run():
    start = process_seconds()
    _busy(0.1)
    rows = cost_rows('run1', 'churn', process_seconds() - start, 500, Prices(cpu_hour=1.0))
    assert {'cpu_seconds', 'wall_seconds', 'money', 'money_per_1k_predictions'} <= set(rows['metric'])
    other = metric_frame([{'version': 1, 'arm': 'champion', 'kind': 'operational', 'metric': 'requests', 'value': 500.0, 'n': 500}],
                         run_id='run1', model='churn')
    assert pl.concat([other, rows]).height == 1 + rows.height
    assert sorted(cost_rows('r', 'm', 5.0, 0, Prices())['metric']) == ['cpu_seconds', 'money']  # nothing to divide by


def test_prices_from_the_workspace_config(tmp_path):
    ws = init_workspace(tmp_path / 'ws').workspace
    free = Prices.from_config(ws)
    assert (free.cpu_hour, free.gpu_hour, free.configured) == (0.0, 0.0, False) and 'every price is 0' in free.source
    cfg = ws.root / 'mlwork.toml'
    cfg.write_text(cfg.read_text() + '\n[cost]\ncpu_hour = 0.05\ngpu_hour = 2.5\ncurrency = "USD"\n')
    p = Prices.from_config(ws)
    assert (p.cpu_hour, p.gpu_hour, p.currency, p.configured) == (0.05, 2.5, 'USD', True)
    assert p.to_dict()['cpu_hour'] == 0.05 and '0.05 USD per CPU-hour' in str(p) and '<table>' in p._repr_html_()
    from mlwork.core import open_workspace
    assert open_workspace(ws.root).config.cpu_hour == 0.05   # the workspace itself accepts its [cost] table
    cfg.write_text('[cost]\ncpu_hour = "cheap"\n')
    with pytest.raises(ConfigError, match=r'\[cost\] cpu_hour must be a non-negative number .*Found .cheap.'):
        Prices.from_config(ws)
    cfg.write_text('[cost]\ncpu_hours = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'cpu_hours' in \\[cost\\]"):
        Prices.from_config(ws)


def test_bad_input():
    with pytest.raises(InvalidParameter, match="'predictions' parameter of cost_rows must be a non-negative int"):
        cost_rows('r', 'm', 1.0, -5, Prices())
    with pytest.raises(InvalidParameter, match="'gpu_seconds' parameter of cost_rows"):
        cost_rows('r', 'm', 1.0, 5, Prices(), gpu_seconds=float('nan'))
    with pytest.raises(ValueError, match='same process'):
        process_seconds(__import__('os').getpid()) - process_seconds()
    assert isinstance(process_seconds(), ProcessSeconds)
