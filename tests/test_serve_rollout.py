"""Canary, shadow, promotion and rollback on a running service under load: no failed request, sticky routing, every
answered request in the prediction log, and the audit log names who did what."""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving import Server, make_workspace

pytestmark = pytest.mark.timeout(600)


class Load:
    """Clients posting single rows with entity keys until stopped; every answer recorded with its time."""

    def __init__(self, server: Server, ws, threads: int = 6) -> None:
        self.server, self.ws, self.stop_flag = server, ws, threading.Event()
        self.answers: list[tuple[float, str, int, dict]] = []  # (time, entity key, status, body)
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._client, i) for i in range(threads)]

    def _client(self, i: int) -> None:
        rng = random.Random(i)
        h = self.server.headers(self.ws.keys['scorer'])
        with httpx.Client(base_url=self.server.url, timeout=30) as c:
            while not self.stop_flag.is_set():
                key = f'customer-{rng.randrange(2000)}'
                r = c.post('/v1/predict', json={'features': self.ws.rows[rng.randrange(len(self.ws.rows))], 'key': key}, headers=h)
                self.answers.append((time.monotonic(), key, r.status_code, r.json()))

    def stop(self) -> None:
        self.stop_flag.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()

    def between(self, t0: float, t1: float) -> list[tuple[float, str, int, dict]]:
        return [a for a in self.answers if t0 <= a[0] <= t1]


def test_canary_promote_and_rollback_under_load(tmp_path):
    from mlwork import AuditLog, open_workspace
    from mlwork.serve.predlog import read_predictions
    ws = make_workspace(tmp_path / 'ws')
    s = Server(ws.home, 'credit', '--workers', '2')
    op, admin = s.headers(ws.keys['operator']), s.headers(ws.keys['admin'])
    load = Load(s, ws)
    time.sleep(1.5)
    t_canary = time.monotonic()
    r = s.client.put('/v1/rollout', json={'mode': 'canary', 'percent': 10}, headers=op)
    assert r.status_code == 200, r.text
    time.sleep(1.0)  # every worker has re-read the rollout (poll 0.2 s)
    t_canary_on = time.monotonic()
    time.sleep(4)
    t_promote = time.monotonic()
    r = s.client.post('/v1/promote', json={'reason': 'canary looked good'}, headers=admin)
    assert r.status_code == 200 and r.json()['promoted'] == 2, r.text
    time.sleep(1.0)
    t_promoted = time.monotonic()
    time.sleep(2)
    t_rollback = time.monotonic()
    r = s.client.post('/v1/rollback', json={'reason': 'drill'}, headers=admin)
    assert r.status_code == 200 and r.json()['rolled_back_to'] == 1, r.text
    time.sleep(1.0)
    t_rolled = time.monotonic()
    time.sleep(2)
    load.stop()
    assert s.stop() == 0

    statuses = [a[2] for a in load.answers]
    assert len(statuses) > 500 and set(statuses) == {200}, f'failed requests: {[x for x in statuses if x != 200][:5]}'
    before = load.between(0, t_canary)
    assert {a[3]['arm'] for a in before} == {'champion'} and {a[3]['version'] for a in before} == {1}
    canary = load.between(t_canary_on, t_promote)
    share = sum(a[3]['arm'] == 'challenger' for a in canary) / len(canary)
    assert 0.04 < share < 0.18, share  # 10 % of 2 000 entity keys, sampled by the clients
    arm_of: dict[str, set[str]] = {}
    for a in canary:
        arm_of.setdefault(a[1], set()).add(a[3]['arm'])
    assert all(len(v) == 1 for v in arm_of.values()), 'an entity key saw both models during the canary'
    assert {a[3]['version'] for a in canary if a[3]['arm'] == 'challenger'} == {2}
    promoted = load.between(t_promoted, t_rollback)
    assert {(a[3]['arm'], a[3]['version']) for a in promoted} == {('champion', 2)}
    rolled = load.between(t_rolled, float('inf'))
    assert {(a[3]['arm'], a[3]['version']) for a in rolled} == {('champion', 1)}

    logged = read_predictions(open_workspace(ws.home), 'credit')
    ids = logged['request_id'].to_list()
    answered = [a[3]['request_id'] for a in load.answers]
    assert set(answered) <= set(ids) and len(ids) == len(set(ids))
    entries = AuditLog.for_workspace(open_workspace(ws.home)).entries()
    done = list(zip(entries['action'].to_list(), entries['who'].to_list()))
    assert ('serve.rollout', 'test-operator') in done  # the canary, by the operator's key
    assert [w for a, w in done if 'promote' in a][-1] == 'test-admin' and [w for a, w in done if 'rollback' in a][-1] == 'test-admin'


def test_shadow_answers_with_the_champion_and_logs_the_challenger(tmp_path):
    from mlwork import open_workspace
    from mlwork.serve.predlog import read_predictions
    ws = make_workspace(tmp_path / 'ws', rows=600)
    with Server(ws.home, 'credit') as s:
        r = s.client.put('/v1/rollout', json={'mode': 'shadow'}, headers=s.headers(ws.keys['operator']))
        assert r.status_code == 200, r.text
        h = s.headers(ws.keys['scorer'])
        ids = [s.client.post('/v1/predict', json={'features': row}, headers=h).json() for row in ws.rows[:50]]
        assert {(b['arm'], b['version']) for b in ids} == {('champion', 1)}
    logged = read_predictions(open_workspace(ws.home), 'credit')
    mine = logged.filter(logged['request_id'].is_in([b['request_id'] for b in ids]))
    assert sorted(mine['arm'].unique().to_list()) == ['champion', 'shadow']
    assert mine.filter(mine['arm'] == 'shadow')['version'].unique().to_list() == [2]


def test_rollout_refuses_bad_settings(tmp_path):
    ws = make_workspace(tmp_path / 'ws', challenger=False, rows=400)
    with Server(ws.home, 'credit', '--log', 'off') as s:
        op = s.headers(ws.keys['operator'])
        assert s.client.put('/v1/rollout', json={'mode': 'canary', 'percent': 150}, headers=op).status_code == 422
        r = s.client.put('/v1/rollout', json={'mode': 'canary', 'percent': 10}, headers=op)
        assert r.status_code == 409 and 'challenger' in r.json()['detail']
        r = s.client.post('/v1/feedback', json={'request_id': 'x', 'label': 1}, headers=s.headers(ws.keys['scorer']))
        assert r.status_code == 409
