"""The scoring service as a user meets it: a real `mlwork serve` process on a loopback port, called over HTTP.

Good and bad requests, every role against every endpoint, TLS, size limits, metrics, the prediction log after a clean
stop and after `kill -9`, and secrets kept out of every file the service writes."""
from __future__ import annotations

import io
import json
import signal
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving import FEATURES, Server, make_workspace

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp('serve') / 'ws')


@pytest.fixture(scope='module')
def server(ws):
    s = Server(ws.home, 'credit', '--max-body-mb', '1')
    yield s
    s.stop()


def arrow_body(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_single_prediction_matches_the_model_in_process(ws, server):
    from mlwork import Registry, open_workspace
    model = Registry(open_workspace(ws.home)).load('credit', 'champion')
    expected = model.predict(pl.DataFrame(ws.rows[:20]).select(model.features))
    h = server.headers(ws.keys['scorer'])
    for row, p in zip(ws.rows[:20], expected):
        r = server.client.post('/v1/predict', json={'features': row}, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body['model'], body['version'], body['arm']) == ('credit', 1, 'champion')
        assert body['prediction'] == pytest.approx(float(p), rel=1e-12)
        assert len(body['request_id']) >= 16


def test_reasons_are_treeshap_contributions(ws, server):
    from mlwork import Registry, open_workspace
    model = Registry(open_workspace(ws.home)).load('credit', 'champion')
    row = ws.rows[0]
    r = server.client.post('/v1/predict', json={'features': row, 'explain': 3}, headers=server.headers(ws.keys['scorer']))
    reasons = r.json()['reasons']
    contrib = model.booster.predict(model.matrix(pl.DataFrame([row]).select(model.features)), pred_contrib=True)[0]
    top = sorted(range(len(model.features)), key=lambda j: -abs(contrib[j]))[:3]
    assert [x['feature'] for x in reasons] == [model.features[j] for j in top]
    assert [x['contribution'] for x in reasons] == pytest.approx([contrib[j] for j in top])


def test_batches_in_json_arrow_and_parquet_agree(ws, server):
    h = server.headers(ws.keys['scorer'])
    rows = ws.rows[:500]
    js = server.client.post('/v1/predict/batch', json={'rows': rows}, headers=h)
    assert js.status_code == 200, js.text
    arrow = server.client.post('/v1/predict/batch', content=arrow_body(rows),
                               headers={**h, 'content-type': 'application/vnd.apache.arrow.stream'})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    parquet = server.client.post('/v1/predict/batch', content=buf.getvalue(),
                                 headers={**h, 'content-type': 'application/vnd.apache.parquet'})
    assert arrow.status_code == parquet.status_code == 200, (arrow.text, parquet.text)
    assert js.json()['predictions'] == pytest.approx(arrow.json()['predictions'], rel=1e-12)
    assert js.json()['predictions'] == pytest.approx(parquet.json()['predictions'], rel=1e-12)
    both = server.client.post('/v1/predict/batch', content=arrow_body(rows), headers={
        **h, 'content-type': 'application/vnd.apache.arrow.stream', 'accept': 'application/vnd.apache.arrow.stream'})
    table = pa.ipc.open_stream(both.content).read_all()  # Arrow in, Arrow out: the same answer
    assert both.headers['content-type'] == 'application/vnd.apache.arrow.stream' and both.headers['x-mlwork-rows'] == '500'
    assert table['prediction'].to_pylist() == pytest.approx(js.json()['predictions'], rel=1e-12)
    assert table['label'].to_pylist() == js.json()['label'] and both.headers['x-mlwork-version'] == '1'
    single = server.client.post('/v1/predict', json={'features': rows[7]}, headers=h).json()
    assert js.json()['predictions'][7] == pytest.approx(single['prediction'])
    assert js.json()['rows'] == 500


def test_bad_requests_name_every_field_and_never_show_a_trace(ws, server):
    h = server.headers(ws.keys['scorer'])
    row = dict(ws.rows[0])
    bad = {**row, 'age': 'forty', 'income': True, 'loan_amount': None}
    del bad['debt_ratio']
    r = server.client.post('/v1/predict', json={'features': bad}, headers=h)
    assert r.status_code == 422
    fields = {e['field']: e for e in r.json()['detail']}
    assert set(fields) >= {'age', 'income', 'debt_ratio'}, r.json()
    for e in fields.values():
        assert {'row', 'field', 'problem', 'expected', 'found'} <= set(e)
    # an unknown category of the challenger's categorical feature, in a batch: row numbers of the batch
    rows = [dict(x) for x in ws.rows[:3]]
    rows[2]['age'] = 'x'
    r = server.client.post('/v1/predict/batch', json={'rows': rows}, headers=h)
    assert r.status_code == 422 and [e['row'] for e in r.json()['detail']] == [2]
    for body, ctype in ((b'{"features": ', 'application/json'), (b'not arrow', 'application/vnd.apache.arrow.stream'),
                        (b'a,b\n1,2', 'text/csv'), (b'{"rows": []}', 'application/json')):
        path = '/v1/predict' if body.startswith(b'{"features') else '/v1/predict/batch'
        r = server.client.post(path, content=body, headers={**h, 'content-type': ctype})
        assert r.status_code in (415, 422), (ctype, r.status_code, r.text)
        assert 'Traceback' not in r.text and 'File "' not in r.text
    r = server.client.post('/v1/predict', json={'features': row, 'explain': -1}, headers=h)
    assert r.status_code == 422


def test_body_size_limit(ws, server):
    h = server.headers(ws.keys['scorer'])
    big = {'rows': ws.rows * 4}  # about 2 MB of JSON; the server was started with --max-body-mb 1
    r = server.client.post('/v1/predict/batch', json=big, headers=h)
    assert r.status_code == 413 and 'limit' in r.json()['detail']

    def chunks():  # no Content-Length: counted while it streams in
        data = json.dumps(big).encode()
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]
    r = server.client.post('/v1/predict/batch', content=chunks(), headers={**h, 'content-type': 'application/json'})
    assert r.status_code == 413


def _request_for(endpoint: str, ws) -> dict:
    """A request to `endpoint` that passes authorisation and then changes nothing (bad body or unknown id)."""
    method, path = endpoint.split(' ', 1)
    body = {'POST /v1/predict': {'features': ws.rows[0]}, 'POST /v1/predict/batch': {'rows': ws.rows[:2]},
            'POST /v1/feedback': {'request_id': 'nope', 'label': 1}, 'PUT /v1/rollout': {'mode': 'sideways'},
            'POST /v1/promote': {}, 'POST /v1/rollback': {}, 'POST /v1/keys': {'name': 'x'}}.get(endpoint)
    return {'method': method, 'url': path.replace('{key_id}', 'no-such-key'), 'json': body}


def test_every_role_against_every_endpoint(ws, server):
    from mlwork.serve.access import ENDPOINT_ROLES, ROLES, role_allows
    assert {'GET /metrics', 'POST /v1/predict', 'PUT /v1/rollout', 'POST /v1/promote', 'POST /v1/keys'} <= set(ENDPOINT_ROLES)
    callers = {None: None, 'garbage': 'mlw_000000000000_garbage', **{r: ws.keys[r] for r in ROLES}}
    checked = 0
    for endpoint, needed in ENDPOINT_ROLES.items():
        for who, secret in callers.items():
            r = server.client.request(**_request_for(endpoint, ws), headers=server.headers(secret))
            if needed == 'open':
                allowed = True
            else:
                allowed = who in ROLES and role_allows(who, needed)
            if allowed:
                assert r.status_code not in (401, 403), (endpoint, who, r.status_code, r.text)
            else:
                assert r.status_code == (403 if who in ROLES else 401), (endpoint, who, r.status_code, r.text)
                if who in ROLES:
                    assert needed in r.json()['detail'] and who in r.json()['detail']
            assert secret is None or secret not in r.text
            checked += 1
    assert checked == len(ENDPOINT_ROLES) * len(callers)
    spec = server.client.get('/openapi.json', headers=server.headers(ws.keys['viewer'])).json()
    routes = {f'{m.upper()} {p}' for p, ops in spec['paths'].items() for m in ops} | {'GET /openapi.json'}
    assert routes == set(ENDPOINT_ROLES), 'every route has its role in the one table, and the table has no stale route'


def test_metrics_count_requests(ws, server):
    h = server.headers(ws.keys['scorer'])
    for row in ws.rows[:5]:
        server.client.post('/v1/predict', json={'features': row}, headers=h)
    text = server.client.get('/metrics', headers=server.headers(ws.keys['viewer'])).text
    line = next(x for x in text.splitlines() if x.startswith('mlwork_requests_total{') and 'endpoint="/v1/predict"' in x
                and 'status="200"' in x)
    assert float(line.rsplit(' ', 1)[1]) >= 5
    assert 'mlwork_request_seconds_bucket' in text and 'mlwork_model_version{alias="champion"} 1.0' in text


def test_openapi_lists_the_endpoints(ws, server):
    spec = server.client.get('/openapi.json', headers=server.headers(ws.keys['viewer'])).json()
    assert {'/v1/predict', '/v1/predict/batch', '/v1/feedback', '/v1/rollout', '/v1/promote', '/metrics'} <= set(spec['paths'])


def test_tls_with_a_self_signed_certificate(ws, tmp_path):
    from mlwork.serve.access import self_signed_certificate
    cert, key = self_signed_certificate(tmp_path / 'tls')
    with Server(ws.home, 'credit', '--certfile', str(cert), '--keyfile', str(key), '--log', 'off', scheme='https',
                verify=ssl.create_default_context(cafile=str(cert))) as s:
        r = s.client.post('/v1/predict', json={'features': ws.rows[0]}, headers=s.headers(ws.keys['scorer']))
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port gets no answer
            httpx.get(f'http://127.0.0.1:{s.port}/health', timeout=5)


def test_kill_9_loses_no_acknowledged_prediction(tmp_path):
    from mlwork import open_workspace
    from mlwork.serve.predlog import read_predictions
    w = make_workspace(tmp_path / 'ws', challenger=False, rows=600)
    s = Server(w.home, 'credit', '--log', 'durable')
    acked, stop = [], threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            j = 0
            while not stop.is_set():
                try:
                    r = c.post('/v1/predict', json={'features': w.rows[(i * 97 + j) % len(w.rows)], 'id': f'c{i}-{j}'},
                               headers=s.headers(w.keys['scorer']))
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    acked.append(r.json()['request_id'])
                j += 1

    with ThreadPoolExecutor(8) as pool:
        for i in range(8):
            pool.submit(client, i)
        while len(acked) < 300:
            threading.Event().wait(0.05)
        s.stop(signal.SIGKILL)
        stop.set()
    logged = read_predictions(open_workspace(w.home), 'credit')
    ids = logged['request_id'].to_list()
    assert len(acked) >= 300
    assert set(acked) <= set(ids), f'{len(set(acked) - set(ids))} acknowledged predictions lost'
    assert len(ids) == len(set(ids)), 'a prediction was logged twice'


def test_two_workers_share_the_log_and_nothing_leaks(ws, tmp_path):
    from mlwork import open_workspace
    from mlwork.serve.predlog import read_predictions
    s = Server(ws.home, 'credit', '--workers', '2', '--log', 'durable')
    h = s.headers(ws.keys['scorer'])

    def call(i: int) -> str:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            return c.post('/v1/predict', json={'features': ws.rows[i], 'id': f'two-{i}'}, headers=h).json()['request_id']

    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(call, range(400)))
    text = s.client.get('/metrics', headers=s.headers(ws.keys['viewer'])).text
    # the workers accept one connection per wake-up (libuv's UV_TCP_SINGLE_ACCEPT), so a burst is shared among them
    import psutil
    workers = [p for p in psutil.Process(s.proc.pid).children(recursive=True) if 'spawn_main' in ' '.join(p.cmdline())]
    assert len(workers) == 2 and all(p.environ().get('UV_TCP_SINGLE_ACCEPT') == '1' for p in workers)
    assert s.stop() == 0
    logged = read_predictions(open_workspace(ws.home), 'credit')
    new = [i for i in logged['request_id'].to_list() if i.startswith('two-')]
    assert sorted(new) == sorted(sent), 'rows lost or duplicated across two workers'
    counted = sum(float(x.rsplit(' ', 1)[1]) for x in text.splitlines() if x.startswith('mlwork_predictions_total{'))
    assert counted >= 400  # summed across both workers (prometheus multiprocess mode)
    # no secret in anything the service wrote: server output, prediction log, audit log
    secrets = list(ws.keys.values())
    for path in Path(ws.home).rglob('*'):
        if path.is_file() and path.stat().st_size < 50_000_000:
            data = path.read_bytes()
            assert not any(sec.encode() in data for sec in secrets), f'a key secret is in {path}'
    assert not any(sec in s.output() for sec in secrets)


def test_pii_columns_are_pseudonymised_in_the_log(ws, tmp_path):
    from mlwork import open_workspace
    from mlwork.serve.predlog import read_predictions
    from conftest import run_mlwork
    # the module's log stores income as a number: --pii income would write text there, so the service refuses to start
    r = run_mlwork('serve', 'credit', '--home', str(ws.home), '--pii', 'income', '--check', cwd=tmp_path)
    assert r.code == 2 and "stores the feature 'income'" in r.err and 'Traceback' not in r.err
    w = make_workspace(tmp_path / 'pii', challenger=False, rows=400)
    with Server(w.home, 'credit', '--pii', 'income', '--pii-mode', 'pseudonymise') as s:
        h = s.headers(w.keys['scorer'])
        for i in range(60):
            assert s.client.post('/v1/predict', json={'features': w.rows[i], 'id': f'pii-{i}'}, headers=h).status_code == 200
    logged = read_predictions(open_workspace(w.home), 'credit').sort('request_id')
    incomes = {f'pii-{i}': w.rows[i]['income'] for i in range(60)}
    pseudonyms = dict(zip(logged['request_id'], logged['features'].struct.field('income')))
    assert set(pseudonyms) == set(incomes)
    assert all(isinstance(v, str) and len(v) >= 32 and str(incomes[r]) not in v for r, v in pseudonyms.items())
    same = {}  # the same income always gets the same pseudonym, different ones different pseudonyms
    for r, v in pseudonyms.items():
        same.setdefault(incomes[r], set()).add(v)
    assert all(len(v) == 1 for v in same.values()) and len({next(iter(v)) for v in same.values()}) == len(same)
    # (that no raw PII value reaches any file of the log is tested on the raw bytes in tests/test_predlog.py)


def test_personal_data_a_model_was_allowed_is_hidden_in_the_log_by_default(tmp_path):
    """A feature used by PII opt-in (recorded in the lineage) is pseudonymised in the log without any --pii; a version loaded
    later that opts in more personal data than the running log hides is not served until a restart."""
    import time
    from mlwork import Registry, generate, open_workspace, train_model
    from mlwork.serve.access import KeyStore
    from mlwork.serve.app import ServeConfig, check_servable
    from mlwork.serve.predlog import read_predictions
    from mlwork import init_workspace
    home = tmp_path / 'optin'
    ws = init_workspace(home).workspace
    data = generate('credit', n_rows=600, seed=5, pii=True).frame
    reg = Registry(ws)
    reg.publish(train_model(data, 'repaid', features=[*FEATURES[:4], 'email'], allow_pii=['email'], num_boost_round=10,
                            early_stopping_rounds=None), 'credit', alias='champion')
    key = KeyStore(ws).create('t', 'admin')[1]
    plan = check_servable(ServeConfig(home=str(home), model='credit'))
    assert plan['pii'] == ['email'] and plan['pii_mode'] == 'pseudonymise'
    rows = data.select(*FEATURES[:4], 'email').head(30).to_dicts()
    with Server(home, 'credit') as s:
        h = s.headers(key)
        for i, row in enumerate(rows):
            assert s.client.post('/v1/predict', json={'features': row, 'id': f'e-{i}'}, headers=h).status_code == 200
        # a challenger that also uses `phone` by opt-in: the running log does not hide it, so it is refused, not served
        reg.publish(train_model(data, 'repaid', features=[*FEATURES[:4], 'phone'], allow_pii=['phone'], num_boost_round=10,
                                early_stopping_rounds=None), 'credit', alias='challenger')
        deadline = time.time() + 30
        while time.time() < deadline and 'phone' not in json.dumps(s.client.get('/ready').json()):
            time.sleep(0.3)
        ready = s.client.get('/ready').json()
        assert 'phone' in json.dumps(ready) and 'restart the service' in json.dumps(ready), ready
        assert s.client.post('/v1/predict', json={'features': rows[0], 'key': 'k'}, headers=h).json()['arm'] == 'champion'
    logged = read_predictions(open_workspace(home), 'credit')
    emails = logged['features'].struct.field('email').to_list()
    assert len(emails) == 31 and not set(emails) & set(data['email']) and all(len(e) >= 32 for e in emails)


def test_a_port_in_use_is_a_one_line_user_error(ws, tmp_path):
    import socket
    from conftest import run_mlwork
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_mlwork('serve', 'credit', '--home', str(ws.home), '--port', str(port), cwd=tmp_path, timeout=120)
    assert r.code == 2 and f'Cannot listen on 127.0.0.1:{port}' in r.err and 'Traceback' not in r.err
