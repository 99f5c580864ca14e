"""The serving benchmark (issue 14): `mlwork serve` against `mlflow models serve --env-manager local` for the same
LightGBM model, loaded by wrk from a second process on 127.0.0.1. Same-run ratios only.

    .venv/bin/python bench/bench_serve.py --repeat 3             # the README table (about 10 minutes; --repeat 1: 4)
    .venv/bin/python bench/bench_serve.py --sides mlflow         # the peer alone
    .venv/bin/python bench/bench_serve.py --sides mlflow,durable,buffered,off   # all three log modes
    .venv/bin/python bench/bench_serve.py --duration 5 --warmup 1 --workers 1 --connections 8 --batch-repeat 3   # a quick look

Needs wrk (`sudo apt-get install -y wrk`; without it an asyncio + httpx load generator in a second process is used,
which tops out far lower: see `--loadgen`). Nothing else beyond the project's dev environment: MLflow's server is
uvicorn + FastAPI from mlflow-skinny, with pandas (a dev dependency) for its parsing.

Set-up (not timed): one binary LightGBM model, 100 trees (no early stopping), 25 numeric features (20 float64, 5 integer
counts: MLflow's signature says double / long, mlwork's schema numeric; no categoricals, because MLflow's pyfunc would
take category strings as a pandas `object` column that the raw Booster cannot read, while mlwork maps them to codes),
trained by `mlwork.models.train.train_model` on 20 000 rows; registered in a temporary workspace as version 1 of
`bench` with alias `champion`; the same booster saved by `mlflow.lightgbm.save_model` with an inferred signature (so
MLflow enforces its schema, as a served MLflow model normally does). A scorer key from `mlwork apikeys add bench --role
scorer --json`. Every server answers one request first and must give the in-process prediction (to 1e-9).

Measured, for each worker count (`--workers`, default 1 2): the servers MLflow (`-w W`), mlwork `--log durable` and
mlwork `--log off` (`--workers W`) run together on three ports; for each connection count (`--connections`, default 8
32) the sides take turns (`--repeat` rounds): a `--warmup` s wrk run (discarded), then a `--duration` s run
(`wrk -t min(c, 2) -c C --timeout 10s` with bench/peers/serve_post.lua posting one single-row JSON body: MLflow
`{"dataframe_split": {"columns": [...], "data": [[...]]}}` to /invocations, mlwork `{"features": {...}}` to
/v1/predict with `Authorization: Bearer`). Reported: req/s, p50, p90, p99, non-2xx responses and socket errors, and
the server's CPU per request (user + system of the server process and its workers over the run, by psutil).
Batch, with the 1-worker servers: 10 000 rows, `--batch-repeat` POSTs each (median, after one untimed) to mlwork
/v1/predict/batch as JSON rows and as an Arrow IPC stream, and to MLflow /invocations as `dataframe_split`, timed from
sending to the last byte of the answer; against `booster.predict` on the same float64 matrix in this process.

Ratios (targets from the issue): single-row throughput mlwork durable / MLflow (>= 10 with 1 worker, >= 5 with 2),
p99 mlwork durable / MLflow (<= 0.2), batch time per row mlwork / in-process (<= 2), durable / off throughput (>= 0.7).
The markdown table goes to stdout, progress to stderr, everything (each run, the load average at each run's start,
versions) to bench/results/serve-<UTC time>.json. On a machine with few cores wrk, the servers and this process share
them: the ratios hold better than the absolute numbers, and CPU per request is the steadiest figure.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / 'results'
LUA = BENCH_DIR / 'peers' / 'serve_post.lua'
VENV_BIN = Path(sys.executable).parent
MLWORK = str(VENV_BIN / 'mlwork')
MLFLOW = str(VENV_BIN / 'mlflow')
MODEL_NAME = 'bench'
N_FLOAT, N_INT = 20, 5
SIDES = ('mlflow', 'durable', 'buffered', 'off')  # mlwork's sides are its --log modes
DEFAULT_SIDES = ('mlflow', 'durable', 'off')
TARGETS = {'throughput_w1': 10.0, 'throughput_w2': 5.0, 'p99': 0.2, 'batch': 2.0, 'durable_vs_off': 0.7}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the model, the workspace, the MLflow model
def make_data(n_rows: int, seed: int):
    "A binary problem with 20 float and 5 integer features (polars frame with target `y`)."
    import numpy as np
    import polars as pl
    rng = np.random.default_rng(seed)
    xf = rng.normal(size=(n_rows, N_FLOAT))
    xi = rng.poisson(3.0, size=(n_rows, N_INT))
    logit = xf[:, :5].sum(1) + 0.5 * xf[:, 5] * xf[:, 6] - 0.3 * (xi[:, 0] - 3) + 0.2 * xi[:, 1] * (xf[:, 7] > 0)
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    cols: dict[str, Any] = {f'x{i:02d}': xf[:, i] for i in range(N_FLOAT)}
    cols.update({f'n{i:02d}': pl.Series(xi[:, i], dtype=pl.Int64) for i in range(N_INT)})
    return pl.DataFrame(cols).with_columns(pl.Series('y', y))


def build(work: Path, seed: int, batch_rows: int) -> dict[str, Any]:
    "Train, register as champion, save for MLflow, make a scorer key; return what the sides need."
    import numpy as np
    import pandas as pd

    from mlwork.core import init_workspace
    from mlwork.models.registry import Registry
    from mlwork.models.train import train_model
    t0 = time.perf_counter()
    model = train_model(make_data(20_000, seed), 'y', num_boost_round=100, early_stopping_rounds=None, seed=seed)
    assert model.booster.num_trees() == 100, model.booster.num_trees()
    ws = init_workspace(work / 'ws').workspace
    reg = Registry(ws)
    version = reg.register(model, MODEL_NAME, reason='serving benchmark', user='bench')
    reg.promote(MODEL_NAME, version.version, 'champion', reason='serving benchmark', user='bench')
    import mlflow.lightgbm
    import mlflow.models
    batch = make_data(batch_rows, seed + 1).drop('y')
    x = model.matrix(batch)
    sample = batch.head(100).to_pandas()
    signature = mlflow.models.infer_signature(sample, model.booster.predict(model.matrix(batch.head(100))))
    mlflow_dir = work / 'mlflow-model'
    mlflow.lightgbm.save_model(model.booster, str(mlflow_dir), signature=signature)
    log(f'set-up: trained, registered {MODEL_NAME}@{version.version} (champion) and saved the MLflow model '
        f'in {time.perf_counter() - t0:.1f} s')
    row = batch.row(0, named=True)
    return {'ws': ws.root, 'model': model, 'features': model.features, 'batch': batch, 'x': np.ascontiguousarray(x),
            'row': row, 'expected_row': float(model.booster.predict(x[:1])[0]), 'mlflow_dir': mlflow_dir,
            'pandas_version': pd.__version__}


def api_key(ws: Path) -> str | None:
    "A scorer key from `mlwork apikeys add bench --role scorer --json` (the secret: the value starting `mlw_`)."
    proc = subprocess.run([MLWORK, 'apikeys', 'add', 'bench', '--role', 'scorer', '--home', str(ws), '--json'],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        log(f'mlwork apikeys add failed ({proc.returncode}): {proc.stderr.strip()[-500:]}')
        return None
    def find(v: Any) -> str | None:
        if isinstance(v, str) and v.startswith('mlw_'):
            return v
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            return next((s for s in map(find, v) if s), None)
        return None
    return find(json.loads(proc.stdout))


def mlwork_serve_available() -> bool:
    try:
        return subprocess.run([MLWORK, 'serve', '--help'], capture_output=True, timeout=120, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    "A server process (in its own process group), its readiness URL and its CPU time."

    def __init__(self, side: str, workers: int, cmd: list[str], port: int, ready_path: str, log_path: Path):
        self.side, self.workers, self.cmd, self.port, self.ready_path, self.log_path = side, workers, cmd, port, ready_path, log_path
        self.proc: subprocess.Popen | None = None
        self._procs: dict[int, Any] = {}
        self._cpu: dict[int, float] = {}

    @property
    def base(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def start(self) -> None:
        env = {**os.environ, 'PATH': f'{VENV_BIN}{os.pathsep}{os.environ.get("PATH", "")}'}  # mlflow runs `uvicorn` from PATH
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_path.open('ab'), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=self.log_path.parent)

    def wait_ready(self, timeout: float = 180.0) -> float:
        assert self.proc is not None, 'start() first'
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors='replace')[-1500:]
                msg = f'{self.side} (w={self.workers}) exited with {self.proc.returncode} before it was ready:\n{tail}'
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(self.base + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        msg = f'{self.side} (w={self.workers}) not ready after {timeout:.0f} s; log: {self.log_path}'
        raise RuntimeError(msg)

    def connections_per_worker(self) -> list[int]:
        "Established connections on the server's port held by each process of the server, most first (workers keep theirs)."
        import psutil
        assert self.proc is not None, 'start() first'
        counts = []
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            try:
                n = sum(1 for c in p.net_connections(kind='tcp')
                        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if n:
                counts.append(n)
        return sorted(counts, reverse=True)

    def cpu_seconds(self) -> float:
        "User + system CPU of the server and all its descendants (processes are remembered, so exited ones keep counting)."
        import psutil
        assert self.proc is not None, 'start() first'
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._procs.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        for pid, p in self._procs.items():
            try:
                t = p.cpu_times()
                self._cpu[pid] = t.user + t.system  # an exited process keeps its last reading
            except psutil.NoSuchProcess:
                pass
        return sum(self._cpu.values())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own child's group (start_new_session)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass


def make_server(side: str, workers: int, built: dict[str, Any], work: Path) -> Server:
    port = free_port()
    log_path = work / f'{side}-w{workers}.log'
    if side == 'mlflow':
        cmd = [MLFLOW, 'models', 'serve', '-m', str(built['mlflow_dir']), '--env-manager', 'local', '-h', '127.0.0.1',
               '-p', str(port), '-w', str(workers)]
        return Server(side, workers, cmd, port, '/ping', log_path)
    cmd = [MLWORK, 'serve', MODEL_NAME, '--home', str(built['ws']), '--host', '127.0.0.1', '--port', str(port),
           '--workers', str(workers), '--log', side]
    return Server(side, workers, cmd, port, '/ready', log_path)


# ---------------------------------------------------------------- request bodies
def bodies(built: dict[str, Any], side: str, work: Path, key: str | None) -> dict[str, Any]:
    "The single-row request of a side: path, body file, headers."
    features, row = built['features'], built['row']
    if side == 'mlflow':
        body = {'dataframe_split': {'columns': features, 'data': [[row[f] for f in features]]}}
        path, headers = '/invocations', {}
    else:
        body = {'features': {f: row[f] for f in features}}
        path, headers = '/v1/predict', {'Authorization': f'Bearer {key}'}
    f = work / f'single-{"mlflow" if side == "mlflow" else "mlwork"}.json'
    f.write_text(json.dumps(body))
    return {'path': path, 'body_file': f, 'headers': headers}


def single_prediction(answer: dict[str, Any], side: str) -> float:
    if side == 'mlflow':
        p = answer['predictions'][0]
        return float(p[0] if isinstance(p, list) else p)
    return float(answer['prediction'])


def post(url: str, data: bytes, headers: dict[str, str], content_type: str = 'application/json',
         timeout: float = 120.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method='POST', headers={'Content-Type': content_type, **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- load generators
def wrk_version() -> str | None:
    try:
        out = subprocess.run(['wrk', '-v'], capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout + out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def run_wrk(url: str, req: dict[str, Any], connections: int, seconds: float) -> dict[str, Any]:
    "One wrk run; the Lua script prints a JSON summary line."
    env = {**os.environ, 'BENCH_BODY': str(req['body_file']), 'BENCH_HEADERS': json.dumps(req['headers'])}
    threads = min(connections, 2)
    cmd = ['wrk', f'-t{threads}', f'-c{connections}', f'-d{seconds:g}s', '--timeout', '10s', '-s', str(LUA), url]
    before = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    after = os.times()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith('BENCH_JSON ')), None)
    if proc.returncode != 0 or line is None:
        msg = f'wrk failed ({proc.returncode}): {proc.stdout[-800:]} {proc.stderr[-800:]}'
        raise RuntimeError(msg)
    r = json.loads(line.removeprefix('BENCH_JSON '))
    secs = r['duration_us'] / 1e6
    return {'requests': r['requests'], 'seconds': secs, 'req_per_s': r['requests'] / secs,
            'p50_ms': r['p50_us'] / 1e3, 'p90_ms': r['p90_us'] / 1e3, 'p99_ms': r['p99_us'] / 1e3,
            'max_ms': r['max_us'] / 1e3, 'mean_ms': r['mean_us'] / 1e3, 'non_2xx': r['non_2xx'],
            'socket_errors': {k: r[k] for k in ('connect', 'read', 'write', 'timeout')}, 'threads': threads,
            'loadgen': 'wrk', 'loadgen_cpu_s': (after.children_user - before.children_user)
            + (after.children_system - before.children_system)}


async def _httpx_load(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float) -> dict[str, Any]:
    import httpx
    lat: list[float] = []
    bad = errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10.0, headers={'Content-Type': 'application/json', **headers}) as client:
        stop = time.perf_counter() + seconds
        async def one() -> None:
            nonlocal bad, errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await client.post(url, content=body)
                    lat.append(time.perf_counter() - t)
                    bad += not 200 <= r.status_code < 300
                except httpx.HTTPError:
                    errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3) if lat else (lambda p: float('nan'))
    return {'requests': len(lat), 'seconds': elapsed, 'req_per_s': len(lat) / elapsed, 'p50_ms': q(0.5), 'p90_ms': q(0.9),
            'p99_ms': q(0.99), 'max_ms': q(1.0), 'mean_ms': statistics.fmean(lat) * 1e3 if lat else float('nan'),
            'non_2xx': bad, 'socket_errors': {'other': errors}, 'threads': 1, 'loadgen': 'httpx'}


def run_httpx(url: str, req: dict[str, Any], connections: int, seconds: float) -> dict[str, Any]:
    "The fallback: asyncio + httpx in a second process (one Python thread: it saturates near 1-2 k req/s)."
    cmd = [sys.executable, __file__, '--httpx-worker', url, str(req['body_file']), json.dumps(req['headers']),
           str(connections), str(seconds)]
    before = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f'httpx load generator failed: {proc.stderr[-800:]}')
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r['loadgen_cpu_s'] = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return r


# ---------------------------------------------------------------- measurements
def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def settle_cpu(srv: Server, step: float = 0.5, idle: float = 0.02, limit: float = 15.0) -> tuple[float, float]:
    "CPU the server spends after the load stops (background log commits), until a `step` uses under `idle` s of CPU."
    t0, total = time.perf_counter(), 0.0
    last = srv.cpu_seconds()
    while time.perf_counter() - t0 < limit:
        time.sleep(step)
        now = srv.cpu_seconds()
        if now - last < idle:
            break
        total += now - last
        last = now
    return total, time.perf_counter() - t0


def quiet(servers: dict[str, Server]) -> None:
    "Wait until no server is busy with background work."
    for srv in servers.values():
        settle_cpu(srv, step=0.25, idle=0.01)


def measure_single(servers: dict[str, Server], reqs: dict[str, dict[str, Any]], args: argparse.Namespace,
                   runner: Any) -> list[dict[str, Any]]:
    "For each connection count, the sides in turn: warm-up run (dropped), then the measured run with its CPU."
    out = []
    for c in args.connections:
        for rnd in range(args.repeat):
            order = list(servers) if rnd % 2 == 0 else list(servers)[::-1]
            for side in order:
                srv = servers[side]
                url = srv.base + reqs[side]['path']
                if args.warmup > 0:
                    runner(url, reqs[side], c, args.warmup)
                load = load_average()
                cpu0 = srv.cpu_seconds()
                spread: list[list[int]] = []  # connections per worker, read halfway through the run
                probe = threading.Timer(args.duration / 2, lambda: spread.append(srv.connections_per_worker()))
                probe.start()
                r = runner(url, reqs[side], c, args.duration)
                probe.join()
                cpu1 = srv.cpu_seconds()
                after, settle = settle_cpu(srv)
                cpu = cpu1 - cpu0 + after
                r.update(side=side, workers=srv.workers, connections=c, round=rnd + 1, load_avg_1m=load,
                         server_cpu_s=cpu1 - cpu0, server_cpu_after_s=after, settle_s=settle,
                         cpu_ms_per_request=cpu / r['requests'] * 1e3 if r['requests'] else None,
                         connections_per_worker=spread[0] if spread else None)
                log(f'  w={srv.workers} c={c:>2} {side:8s}: {r["req_per_s"]:8.1f} req/s  p50 {r["p50_ms"]:7.2f} ms  '
                    f'p99 {r["p99_ms"]:7.2f} ms  non-2xx {r["non_2xx"]}  CPU {r["cpu_ms_per_request"] or 0:.3f} ms/req  '
                    f'(+{after:.2f} s after; load generator {r["loadgen_cpu_s"]:.1f} s CPU) '
                    f'(load {load or 0:.1f}; connections per worker {"/".join(map(str, spread[0])) if spread else "?"})')
                out.append(r)
    return out


def measure_batch(servers: dict[str, Server], built: dict[str, Any], key: str | None, repeat: int) -> dict[str, Any]:
    """10 k rows: in-process booster.predict, mlwork JSON rows and Arrow IPC, MLflow dataframe_split; one untimed round,
    then `repeat` rounds taking the paths in turn (HTTP: one kept-alive connection each, seconds to the answer's last byte),
    each once every server is idle (`quiet`)."""
    import gc

    import httpx
    import numpy as np
    import pyarrow as pa
    x, batch, features = built['x'], built['batch'], built['features']
    booster = built['model'].booster
    n = x.shape[0]
    expected = booster.predict(x)
    cases: list[tuple[str, Server, str, bytes, str, dict[str, str]]] = []
    if 'mlflow' in servers:
        frame = batch.to_pandas()
        body = json.dumps({'dataframe_split': {'columns': features, 'data': frame[features].values.tolist()}}).encode()
        cases.append(('mlflow_json', servers['mlflow'], '/invocations', body, 'application/json', {}))
    auth = {'Authorization': f'Bearer {key}'}
    json_rows = json.dumps({'rows': batch.to_dicts()}).encode()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.to_arrow().schema) as w:
        w.write_table(batch.to_arrow())
    arrow = sink.getvalue().to_pybytes()
    for side in ('durable', 'buffered', 'off'):  # the first one present is the headline ('mlwork_json', 'mlwork_arrow')
        if side in servers:
            suffix = '' if not any(c[0] == 'mlwork_json' for c in cases) else f'_{side}'
            cases.append((f'mlwork_json{suffix}', servers[side], '/v1/predict/batch', json_rows, 'application/json', auth))
            cases.append((f'mlwork_arrow{suffix}', servers[side], '/v1/predict/batch', arrow,
                          'application/vnd.apache.arrow.stream', auth))
            cases.append((f'mlwork_arrow_io{suffix}', servers[side], '/v1/predict/batch', arrow,  # Arrow in and out
                          'application/vnd.apache.arrow.stream', {**auth, 'Accept': 'application/vnd.apache.arrow.stream'}))
    clients = {name: httpx.Client(timeout=300.0, headers={'Content-Type': ctype, **headers})
               for name, _, _, _, ctype, headers in cases}
    samples: dict[str, list[float]] = {'in_process': [], **{c[0]: [] for c in cases}}
    out: dict[str, Any] = {'rows': n, 'repeat': repeat}
    failed: dict[str, str] = {}
    try:
        for rnd in range(repeat + 1):
            quiet(servers)
            gc.collect()
            t = time.perf_counter()
            booster.predict(x)
            if rnd:
                samples['in_process'].append(time.perf_counter() - t)
            for name, srv, path, body, _, _ in cases:
                if name in failed:
                    continue
                quiet(servers)  # a durable server commits the last batch's log to Delta in the background: not during others' timing
                t = time.perf_counter()
                r = clients[name].post(srv.base + path, content=body)
                answer = r.content
                elapsed = time.perf_counter() - t
                if r.status_code != 200:
                    failed[name] = f'{name}: {srv.base + path} answered {r.status_code}: {answer[:300]!r} (see {srv.log_path.name})'
                    log('  ' + failed[name])
                    continue
                if rnd:
                    samples[name].append(elapsed)
                else:
                    if r.headers.get('content-type') == 'application/vnd.apache.arrow.stream':
                        preds = np.asarray(pa.ipc.open_stream(answer).read_all()['prediction'].to_numpy(), dtype=float)
                    else:
                        got = json.loads(answer)
                        preds = np.asarray(got.get('predictions', got) if isinstance(got, dict) else got, dtype=float).reshape(-1)
                    diff = float(np.max(np.abs(preds - expected))) if preds.shape == expected.shape else None
                    out[name] = {'server': f'{srv.side} w={srv.workers}', 'body_bytes': len(body), 'max_abs_diff': diff}
                    if diff is None or diff > 1e-9:
                        failed[name] = f'{name}: predictions differ from in-process booster.predict (max |diff| {diff})'
                        log('  ' + failed[name])
    finally:
        for c in clients.values():
            c.close()
    out['failed'] = failed
    for name, ss in samples.items():
        if name in failed or not ss:
            out.pop(name, None)
            continue
        med = statistics.median(ss)
        out[name] = {**out.get(name, {}), 'samples_s': ss, 'median_s': med, 'us_per_row': med / n * 1e6,
                     'min_us_per_row': min(ss) / n * 1e6}
        log(f'  batch {name:12s}: median {med * 1e3:8.1f} ms ({med / n * 1e6:.2f} µs/row)')
    return out


# ---------------------------------------------------------------- summary
def summarize(result: dict[str, Any]) -> dict[str, Any]:
    "Same-run ratios: per (workers, connections) medians over rounds, then mlwork / MLflow and durable / off."
    runs = result['single']
    cells: dict[tuple[int, int], dict[str, dict[str, float]]] = {}
    for (w, c) in sorted({(r['workers'], r['connections']) for r in runs}):
        cells[(w, c)] = {}
        for side in SIDES:
            rs = [r for r in runs if (r['workers'], r['connections'], r['side']) == (w, c, side)]
            if rs:
                cells[(w, c)][side] = {k: statistics.median(r[k] for r in rs if r[k] is not None)
                                       for k in ('req_per_s', 'p50_ms', 'p99_ms', 'cpu_ms_per_request')}
                cells[(w, c)][side]['non_2xx'] = sum(r['non_2xx'] for r in rs)
                cells[(w, c)][side]['socket_errors'] = sum(sum(r['socket_errors'].values()) for r in rs)
    rows = []
    present = {side for s in cells.values() for side in s}
    headline = next((m for m in ('durable', 'buffered', 'off') if m in present), None)  # the mlwork side compared with MLflow
    for (w, c), s in cells.items():
        row: dict[str, Any] = {'workers': w, 'connections': c, **{side: v for side, v in s.items()}}
        if 'mlflow' in s and headline in s:
            h = s[headline]
            row['throughput_ratio'] = h['req_per_s'] / s['mlflow']['req_per_s']
            row['throughput_target'] = TARGETS['throughput_w1' if w == 1 else 'throughput_w2']
            row['p99_ratio'] = h['p99_ms'] / s['mlflow']['p99_ms']
            row['cpu_ratio'] = s['mlflow']['cpu_ms_per_request'] / h['cpu_ms_per_request']
        if 'durable' in s and 'off' in s:
            row['durable_vs_off'] = s['durable']['req_per_s'] / s['off']['req_per_s']
        rows.append(row)
    summary: dict[str, Any] = {'single': rows, 'headline': headline}
    b = result.get('batch')
    if b:
        ip = b['in_process']['us_per_row']
        ip_min = b['in_process']['min_us_per_row']
        order = ['in_process', *(k for k in b if k != 'in_process')]
        summary['batch'] = {k: {'us_per_row': v['us_per_row'], 'vs_in_process': v['us_per_row'] / ip,
                                'min_us_per_row': v['min_us_per_row'], 'min_vs_in_process': v['min_us_per_row'] / ip_min}
                            for k in order if isinstance(v := b[k], dict) and 'us_per_row' in v}
    return summary


def _f(x: float | None, fmt: str = '.1f') -> str:
    return '—' if x is None else format(x, fmt)


def markdown(result: dict[str, Any]) -> str:
    s, env, a = result['summary'], result['environment'], result['args']
    lines = [f"Benchmark `serve` ({result['started'][:10]}): {a['duration']:g} s per run after {a['warmup']:g} s warm-up, "
             f"{a['repeat']} round(s), load by {result['loadgen']}, {env['cpu_count']} CPU cores, Python {env['python']}, "
             + ', '.join(f'{k} {v}' for k, v in env['packages'].items())
             + f"; workspace (prediction log) on {env.get('workspace_fs') or 'an unknown file system'}.", '',
             (f"Single-row requests (mlwork with its prediction log {s['headline'] or '—'}; CPU: the server's, per request, "
              'background log commits included):'), '',
             ('| workers | clients | MLflow req/s | p50 ms | p99 ms | CPU ms/req | mlwork req/s | p50 ms | p99 ms '
              '| CPU ms/req | throughput ×MLflow (target) | p99 ÷ MLflow (≤ 0.2) | CPU ÷ MLflow\'s |'),
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in s['single']:
        m, d = r.get('mlflow', {}), r.get(s['headline'], {})
        tp = f"{r['throughput_ratio']:.1f}× (≥ {r['throughput_target']:g})" if 'throughput_ratio' in r else '—'
        cpu = f"{1 / r['cpu_ratio']:.3f}" if r.get('cpu_ratio') else '—'  # mlwork's CPU per request ÷ MLflow's
        lines.append('| ' + ' | '.join([
            str(r['workers']), str(r['connections']), _f(m.get('req_per_s')), _f(m.get('p50_ms')), _f(m.get('p99_ms')),
            _f(m.get('cpu_ms_per_request'), '.2f'), _f(d.get('req_per_s')), _f(d.get('p50_ms'), '.2f'),
            _f(d.get('p99_ms'), '.2f'), _f(d.get('cpu_ms_per_request'), '.3f'), tp, _f(r.get('p99_ratio'), '.3f'), cpu]) + ' |')
    modes = [m for m in ('durable', 'buffered', 'off') if any(m in r for r in s['single'])]
    if len(modes) > 1:
        lines += ['', "mlwork's prediction log modes:", '',
                  '| workers | clients | ' + ' | '.join(f'{m} req/s | {m} p99 ms | {m} CPU ms/req' for m in modes)
                  + ' | durable ÷ off (≥ 0.7) |', '|---:|---:|' + '---:|' * (3 * len(modes) + 1)]
        for r in s['single']:
            cells = [str(r['workers']), str(r['connections'])]
            for m in modes:
                v = r.get(m, {})
                cells += [_f(v.get('req_per_s')), _f(v.get('p99_ms'), '.2f'), _f(v.get('cpu_ms_per_request'), '.3f')]
            lines.append('| ' + ' | '.join(cells + [_f(r.get('durable_vs_off'), '.2f')]) + ' |')
    bad = [(r['workers'], r['connections'], side, r[side]['non_2xx'], r[side]['socket_errors'])
           for r in s['single'] for side in SIDES if side in r and (r[side]['non_2xx'] or r[side]['socket_errors'])]
    lines += ['', 'Non-2xx answers / socket errors: ' + ('none' if not bad else
              '; '.join(f'w={w} c={c} {side}: {n} non-2xx, {e} socket errors' for w, c, side, n, e in bad)) + '.']
    if 'batch' in s:
        b = result['batch']
        lines += ['', f"Batch of {b['rows']:,} rows, {b['repeat']} rounds (paths in turn), time per row:", '',
                  '| path | µs/row, median | ÷ in-process | µs/row, best | ÷ in-process, best |', '|---|---:|---:|---:|---:|']
        names = {'in_process': 'in-process `booster.predict` (float64 matrix)',
                 'mlflow_json': 'MLflow /invocations, dataframe_split'}
        for k, v in s['batch'].items():
            if k.startswith('mlwork_'):
                kind, _, mode = k.removeprefix('mlwork_').partition('_')
                io = mode == 'io' or mode.startswith('io_')
                mode = mode.removeprefix('io').removeprefix('_')
                server = b[k]['server'].split()[0]
                body = 'JSON rows' if kind == 'json' else 'Arrow IPC in and out' if io else 'Arrow IPC in, JSON out'
                names[k] = f"mlwork /v1/predict/batch, {body}, log {mode or server}"
            lines.append(f"| {names.get(k, k)} | {v['us_per_row']:.2f} | {v['vs_in_process']:.2f}× | "
                         f"{v['min_us_per_row']:.2f} | {v['min_vs_in_process']:.2f}× |")
        lines += ['', 'Target: mlwork within 2× of in-process, the time from sending the body to the last byte of the answer.']
    if result.get('notes'):
        lines += ['', *('Note: ' + n for n in result['notes'])]
    return '\n'.join(lines)


def filesystem(path: Path) -> str | None:
    "The file system type holding `path` (from /proc/mounts; None elsewhere): tmpfs would make fsync free."
    try:
        mounts = [ln.split() for ln in Path('/proc/mounts').read_text().splitlines()]
    except OSError:
        return None
    best = max((m for m in mounts if len(m) > 2 and str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    return best[2] if best else None


def environment() -> dict[str, Any]:
    versions = {}
    for n in ('mlwork', 'mlflow-skinny', 'lightgbm', 'fastapi', 'uvicorn', 'pandas', 'numpy', 'pyarrow'):
        try:
            versions[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return {'python': platform.python_version(), 'platform': platform.platform(), 'cpu_count': os.cpu_count(),
            'packages': versions, 'wrk': wrk_version()}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--connections', type=int, nargs='+', default=[8, 32])
    ap.add_argument('--duration', type=float, default=10.0, help='seconds per measured run (default 10)')
    ap.add_argument('--warmup', type=float, default=2.0, help='seconds of untimed load before each run (default 2)')
    ap.add_argument('--repeat', type=int, default=1, help='rounds of the sides in turn (default 1; the table shows medians)')
    ap.add_argument('--sides', default=','.join(DEFAULT_SIDES),
                    help='comma-separated: mlflow, durable, buffered, off (default mlflow,durable,off)')
    ap.add_argument('--batch-rows', type=int, default=10_000)
    ap.add_argument('--batch-repeat', type=int, default=5, help='timed POSTs per batch path (0: no batch)')
    ap.add_argument('--loadgen', choices=['auto', 'wrk', 'httpx'], default='auto', help='auto: wrk if installed, else httpx')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--tmp', type=Path, default=None,
                    help='folder for the temporary workspace (default: the system temp folder); durable logging fsyncs there')
    ap.add_argument('--keep', action='store_true', help='keep the temporary folder (workspace, models, server logs)')
    ap.add_argument('--out', type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    sides = [s.strip() for s in args.sides.split(',') if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        ap.error(f"unknown side(s) {', '.join(unknown)}; known: {', '.join(SIDES)}")
    loadgen = args.loadgen if args.loadgen != 'auto' else ('wrk' if wrk_version() else 'httpx')
    if loadgen == 'httpx':
        log('wrk not found: using the asyncio + httpx load generator (one Python thread: numbers above ~1-2 k req/s '
            'measure the client, not the server)')
    runner = run_wrk if loadgen == 'wrk' else run_httpx
    notes = []
    if any(s != 'mlflow' for s in sides) and not mlwork_serve_available():
        notes.append('`mlwork serve` is not available: mlwork sides skipped')
        log(notes[-1])
        sides = [s for s in sides if s == 'mlflow']
    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix='mlwork-bench-serve-', dir=args.tmp))
    result: dict[str, Any] = {'benchmark': 'serve', 'started': started.isoformat(timespec='seconds'), 'args': {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, 'sides': sides},
        'loadgen': loadgen, 'environment': {**environment(), 'workspace_fs': filesystem(tmp)}, 'notes': notes,
        'single': [], 'servers': []}
    servers: dict[str, Server] = {}
    keep = args.keep
    try:
        built = build(tmp, args.seed, args.batch_rows)
        key = api_key(built['ws']) if any(s != 'mlflow' for s in sides) else None
        if any(s != 'mlflow' for s in sides) and not key:
            notes.append('no API key from `mlwork apikeys add`: mlwork sides skipped')
            log(notes[-1])
            sides = [s for s in sides if s == 'mlflow']
        reqs = {side: bodies(built, side, tmp, key) for side in sides}
        for w in args.workers:
            servers = {side: make_server(side, w, built, tmp) for side in sides}
            for srv in servers.values():
                srv.start()
            for side, srv in servers.items():
                ready = srv.wait_ready()
                # /ready answers from the first worker up; the others may still be loading, and a run that starts now
                # finds every connection on that one worker (wrk keeps its connections): wait until all are idle
                ready += settle_cpu(srv, step=0.5, idle=0.05, limit=120.0)[1]
                status, answer = post(srv.base + reqs[side]['path'], reqs[side]['body_file'].read_bytes(), reqs[side]['headers'])
                if status != 200:
                    msg = f'{side} w={w}: a single-row request answered {status}: {answer[:500]!r}'
                    raise RuntimeError(msg)
                got = single_prediction(json.loads(answer), side)
                if abs(got - built['expected_row']) > 1e-9:
                    msg = f'{side} w={w}: predicted {got}, in-process booster.predict gives {built["expected_row"]}'
                    raise RuntimeError(msg)
                result['servers'].append({'side': side, 'workers': w, 'cmd': ' '.join(srv.cmd), 'ready_s': ready})
                log(f'{side} w={w} ready in {ready:.1f} s on port {srv.port}; its single-row prediction matches')
            result['single'] += measure_single(servers, reqs, args, runner)
            if w == min(args.workers) and args.batch_repeat > 0:
                result['batch'] = measure_batch(servers, built, key, args.batch_repeat)
                notes.extend(result['batch']['failed'].values())
                keep = keep or bool(result['batch']['failed'])
            for srv in servers.values():
                srv.stop()
            servers = {}
    except BaseException:
        keep = True  # the server logs say why
        raise
    finally:
        for srv in servers.values():
            srv.stop()
        if keep:
            log(f'kept {tmp}')
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    result['seconds'] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    result['summary'] = summarize(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serve-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + '\n')
    print(markdown(result))
    log(f'\nresults: {path}')
    return 0


def _loadgen_main(argv: list[str]) -> int:
    url, body_file, headers, connections, seconds = argv
    r = asyncio.run(_httpx_load(url, Path(body_file).read_bytes(), json.loads(headers), int(connections), float(seconds)))
    print(json.dumps(r))
    return 0


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--httpx-worker':  # the fallback load generator's process
        sys.exit(_loadgen_main(sys.argv[2:]))
    sys.exit(main())
