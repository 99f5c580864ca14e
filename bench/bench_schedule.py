"""The idle cost of `mlwork schedule serve`: CPU time, wakeups and memory of the scheduler waiting for its next due
time, against peers waiting the same way, each a process of its own measured over the same window.

    .venv/bin/python bench/bench_schedule.py [--seconds 30] [--entries 3] [--repeat 1]

The sides, started together and measured over the same `--seconds` window after a settle time (imports and start-up
are reported apart, as start-up CPU):

- `mlwork schedule serve` with `--entries` entries (`0 3 * * *`, `15 4 * * 1`, `30 5 1 * *`, …: nothing due in the
  window), state and logs in a temporary workspace;
- `croniter loop`: a minimal Python scheduler, croniter's next due time for the same entries and `time.sleep` until the
  first (at most 60 s), the least a cron-based Python scheduler does;
- `sleep`: the coreutils `sleep` process, the floor.

Reported per side: CPU seconds (user + system) in the window and as a percentage of one core, voluntary context
switches in the window (wakeups), resident memory (RSS) at the end, and CPU seconds spent starting up. The full
result goes to bench/results/schedule-<UTC time>.json, the markdown table to stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'results'
CRONS = ['0 3 * * *', '15 4 * * 1', '30 5 1 * *', '45 6 * * 2', '0 7 2 * *', '5 8 * * 3']

MLWORK = str(Path(sys.executable).parent / 'mlwork')  # the installed command

CRONITER_LOOP = '''import sys, time
from datetime import datetime, timezone
from croniter import croniter
crons = sys.argv[1:]
while True:
    now = datetime.now(timezone.utc)
    due = min(croniter(c, now).get_next(datetime) for c in crons)
    time.sleep(min(60.0, max(0.0, (due - now).total_seconds())))
'''


def sides(home: Path, crons: list[str]) -> dict[str, list[str]]:
    return {'mlwork schedule serve': [MLWORK, 'schedule', 'serve', '--home', str(home)],
            'croniter loop': [sys.executable, '-c', CRONITER_LOOP, *crons],
            'sleep': ['sleep', '100000']}


def measure(seconds: float, settle: float, entries: int) -> dict[str, dict[str, float]]:
    import psutil
    import yaml
    from mlwork.core import init_workspace
    crons = (CRONS * (entries // len(CRONS) + 1))[:entries]
    with tempfile.TemporaryDirectory(prefix='bench-schedule-') as d:
        home = init_workspace(Path(d) / 'ws').workspace.root
        (home / 'schedule.yaml').write_text(yaml.safe_dump({'entries': [
            {'name': f'entry-{i}', 'pipeline': str(Path(d) / 'p.ipynb'), 'cron': c} for i, c in enumerate(crons)]}))
        (Path(d) / 'p.ipynb').write_text('{}')
        env = {k: v for k, v in os.environ.items() if not k.startswith('MLWORK_')}
        procs = {name: subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
                 for name, cmd in sides(home, crons).items()}
        try:
            time.sleep(settle)
            ps = {name: psutil.Process(p.pid) for name, p in procs.items()}
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f'{name} exited early ({p.returncode}): {p.stderr.read().decode()[-2000:]}')
            start = {name: (sum(pr.cpu_times()[:2]), pr.num_ctx_switches().voluntary) for name, pr in ps.items()}
            t0 = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - t0
            out = {}
            for name, pr in ps.items():
                cpu, ctx = sum(pr.cpu_times()[:2]), pr.num_ctx_switches().voluntary
                out[name] = {'window_s': wall, 'cpu_s': cpu - start[name][0], 'cpu_pct': 100 * (cpu - start[name][0]) / wall,
                             'wakeups': ctx - start[name][1], 'rss_mib': pr.memory_info().rss / 2**20,
                             'startup_cpu_s': start[name][0]}
            return out
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for name, p in procs.items():
                try:
                    code = p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
                    code = None
                if name == 'mlwork schedule serve' and code != 0:
                    print(f'warning: the scheduler exited {code} on SIGTERM', file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=30.0, help='the measured window (default 30)')
    ap.add_argument('--settle', type=float, default=3.0, help='seconds to let each process start before the window (default 3)')
    ap.add_argument('--entries', type=int, default=3, help='schedule entries (default 3)')
    ap.add_argument('--repeat', type=int, default=1, help='windows measured, one after another (default 1)')
    ap.add_argument('--out', type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    runs = []
    for i in range(args.repeat):
        print(f'window {i + 1}/{args.repeat}: {args.seconds:g} s, {args.entries} entries', file=sys.stderr)
        runs.append(measure(args.seconds, args.settle, args.entries))
    names = list(runs[0])
    med = lambda name, key: sorted(r[name][key] for r in runs)[len(runs) // 2]
    print(f"| process ({args.entries} entries, {args.seconds:g} s idle) | CPU s | CPU % of a core | wakeups | RSS MiB | start-up CPU s |")
    print('|---|---:|---:|---:|---:|---:|')
    for name in names:
        print(f"| {name} | {med(name, 'cpu_s'):.3f} | {med(name, 'cpu_pct'):.3f} | {med(name, 'wakeups'):.0f} | "
              f"{med(name, 'rss_mib'):.1f} | {med(name, 'startup_cpu_s'):.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    path = args.out / f'schedule-{stamp}.json'
    path.write_text(json.dumps({'benchmark': 'schedule', 'args': {k: str(v) for k, v in vars(args).items()}, 'runs': runs,
                                'environment': {'python': platform.python_version(), 'cpus': os.cpu_count(),
                                                'machine': platform.machine()}}, indent=2))
    print(f'wrote {path}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
