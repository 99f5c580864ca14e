"Notifiers against real receivers: an HTTP server on 127.0.0.1 and a local SMTP server (aiosmtpd)."
from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlwork.alerts.notify import (DeliveryError, EmailNotifier, FileNotifier, WebhookNotifier, build_notifiers,
                                  notify)
from mlwork.alerts.rules import AlertEvent, AlertRules, IncidentStore

EVENT = AlertEvent('auc-floor', 'firing', 'inc-20260103T000000Z-abcdef', 'roc_auc', 0.7, 0.75, '2026-01-03', 3,
                   '[critical] auc-floor firing: roc_auc = 0.7, < 0.75 in window 2026-01-03 (version 3, arm champion)',
                   'critical', 'champion', None, 'acs_employment', ('hook',), '2026-01-03T00:00:00+00:00')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Receiver:
    "A webhook receiver: answers with the scripted status codes in turn (then 200), after `delay` seconds."
    def __init__(self, codes=(), delay=0.0):
        self.codes, self.delay, self.bodies, self.hits = list(codes), delay, [], 0
        outer = self
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.hits += 1
                body = self.rfile.read(int(self.headers['Content-Length']))
                time.sleep(outer.delay)
                code = outer.codes.pop(0) if outer.codes else 200
                if code == 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(code)
                self.send_header('Content-Type', 'text/plain')
                self.end_headers()
                self.wfile.write(b'ok' if code == 200 else b'server error')
            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret-token'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- webhook --------------------------------------------------------------------------------------------------

def test_webhook_delivers_slack_compatible_json():
    with Receiver() as rx:
        rep = notify([EVENT], {'hook': WebhookNotifier(rx.url, timeout=2, retries=2, backoff=0.01)})
    assert rep.ok and rep.deliveries[0].attempts == 1, rep
    (body,) = rx.bodies
    assert body['text'] == EVENT.message
    assert body['alert']['incident_id'] == EVENT.incident_id and body['alert']['version'] == 3


def test_webhook_500_then_200_is_retried_and_delivered():
    with Receiver(codes=[500, 503]) as rx:
        waits = []
        rep = notify([EVENT], {'hook': WebhookNotifier(rx.url, timeout=2, retries=3, backoff=0.05)},
                     sleep=lambda s: (waits.append(s), time.sleep(s)))
    assert rep.ok and rep.deliveries[0].attempts == 3 and rx.hits == 3, rep
    assert waits == [0.05, 0.1]  # exponential back-off
    assert len(rx.bodies) == 1


def test_webhook_receiver_down_is_retried_then_recorded(tmp_path):
    url = f'http://127.0.0.1:{_free_port()}/hook'  # nothing listens: connection refused
    store = IncidentStore(tmp_path, 'acs_employment')
    rep = notify([EVENT], {'hook': WebhookNotifier(url, timeout=1, retries=2, backoff=0.01)},
                 dead_letter=store.dead_letter_path)
    assert not rep.ok
    (d,) = rep.failures
    assert d.attempts == 3 and 'cannot connect' in d.error, d
    (line,) = store.dead_letter_path.read_text().splitlines()
    dead = json.loads(line)
    assert dead['notifier'] == 'hook' and dead['attempts'] == 3 and dead['event']['incident_id'] == EVENT.incident_id
    assert store.dead_letter_path.parent == store.path.parent
    assert 'FAILED auc-floor (firing) -> hook after 3 attempt(s)' in str(rep)


def test_webhook_slow_receiver_times_out():
    with Receiver(delay=1.5) as rx:
        t = time.monotonic()
        rep = notify([EVENT], {'hook': WebhookNotifier(rx.url, timeout=0.3, retries=1, backoff=0.01)})
        took = time.monotonic() - t
    (d,) = rep.failures
    assert d.attempts == 2 and 'timed out' in d.error, d
    assert took < 1.4, took


def test_webhook_client_error_is_not_retried_and_url_is_not_leaked(tmp_path):
    with Receiver(codes=[404]) as rx:
        rep = notify([EVENT], {'hook': WebhookNotifier(rx.url, timeout=2, retries=3, backoff=0.01)},
                     dead_letter=tmp_path / 'dead.jsonl')
    (d,) = rep.failures
    assert d.attempts == 1 and 'HTTP 404' in d.error
    assert 'secret-token' not in d.error and 'secret-token' not in (tmp_path / 'dead.jsonl').read_text()


def test_webhook_url_from_environment(monkeypatch):
    with Receiver() as rx:
        monkeypatch.setenv('M2_HOOK_URL', rx.url)
        assert notify([EVENT], {'hook': WebhookNotifier('env:M2_HOOK_URL', retries=0)}).ok
        monkeypatch.delenv('M2_HOOK_URL')
        rep = notify([EVENT], {'hook': WebhookNotifier('env:M2_HOOK_URL', retries=3, backoff=0.01)})
    assert rep.failures[0].attempts == 1 and 'M2_HOOK_URL, which is not set' in rep.failures[0].error


def test_deadline_bounds_the_whole_call():
    url = f'http://127.0.0.1:{_free_port()}/hook'
    events = [EVENT, EVENT]
    t = time.monotonic()
    rep = notify(events, {'hook': WebhookNotifier(url, timeout=1, retries=5, backoff=0.2)}, deadline=0.5)
    assert time.monotonic() - t < 1.5
    assert not rep.ok and len(rep.failures) == 2
    assert all('deadline' in d.error for d in rep.failures), rep


# --- email ----------------------------------------------------------------------------------------------------

aiosmtpd = pytest.importorskip('aiosmtpd')
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


class Inbox:
    "An aiosmtpd handler that keeps messages, or refuses them with `refuse` (e.g. '550 ...')."
    def __init__(self, refuse: str | None = None):
        self.refuse, self.messages = refuse, []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return self.refuse
        self.messages.append(envelope)
        return '250 OK'


@pytest.fixture
def smtp_server():
    started = []
    def start(handler, **kw):
        c = Controller(handler, hostname='127.0.0.1', port=_free_port(), **kw)
        c.start()
        started.append(c)
        return c
    yield start
    for c in started:
        c.stop()


def test_email_is_received_with_subject_and_body(smtp_server):
    inbox = Inbox()
    c = smtp_server(inbox)
    rep = notify([EVENT], {'hook': EmailNotifier('127.0.0.1', c.port, 'mlwork@example.com', ['oncall@example.com'])})
    assert rep.ok, rep
    (env,) = inbox.messages
    assert env.mail_from == 'mlwork@example.com' and env.rcpt_tos == ['oncall@example.com']
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert msg['Subject'] == '[critical] auc-floor firing: roc_auc (acs_employment)'
    body = msg.get_content()
    assert body.startswith(EVENT.message) and 'incident_id: inc-20260103T000000Z-abcdef' in body


def test_email_refused_is_recorded_not_retried(smtp_server, tmp_path):
    c = smtp_server(Inbox(refuse='550 5.7.1 Message rejected by policy'))
    rep = notify([EVENT], {'hook': EmailNotifier('127.0.0.1', c.port, 'a@example.com', 'b@example.com', retries=3, backoff=0.01)},
                 dead_letter=tmp_path / 'dead.jsonl')
    (d,) = rep.failures
    assert d.attempts == 1 and '550' in d.error and 'rejected by policy' in d.error, d
    assert json.loads((tmp_path / 'dead.jsonl').read_text())['error'] == d.error


def test_email_temporary_refusal_is_retried(smtp_server):
    inbox = Inbox(refuse='451 4.3.0 try again later')
    c = smtp_server(inbox)
    rep = notify([EVENT], {'hook': EmailNotifier('127.0.0.1', c.port, 'a@example.com', ['b@example.com'], retries=2, backoff=0.01)})
    assert rep.failures[0].attempts == 3 and '451' in rep.failures[0].error


def test_email_server_down_is_retried_then_recorded():
    rep = notify([EVENT], {'hook': EmailNotifier('127.0.0.1', _free_port(), 'a@example.com', ['b@example.com'],
                                                 timeout=1, retries=1, backoff=0.01)})
    (d,) = rep.failures
    assert d.attempts == 2 and 'ConnectionRefusedError' in d.error, d


def test_email_starttls_and_login_with_password_from_environment(smtp_server, tmp_path, monkeypatch):
    from mlwork.serve.access import self_signed_certificate
    cert, key = self_signed_certificate(tmp_path / 'tls', '127.0.0.1')
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    logins = []
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b'correct horse'
        logins.append((auth_data.login, ok, session.ssl is not None))
        return AuthResult(success=ok)
    inbox = Inbox()
    c = smtp_server(inbox, tls_context=ctx, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    monkeypatch.setenv('M2_SMTP_PASSWORD', 'correct horse')
    mail = EmailNotifier('127.0.0.1', c.port, 'a@example.com', ['b@example.com'], starttls=True, username='alerts',
                         password='env:M2_SMTP_PASSWORD', cafile=str(cert), retries=0)
    rep = notify([EVENT], {'hook': mail})
    assert rep.ok, rep
    assert logins == [(b'alerts', True, True)] and len(inbox.messages) == 1
    monkeypatch.delenv('M2_SMTP_PASSWORD')
    rep = notify([EVENT], {'hook': mail})
    assert rep.failures[0].attempts == 1 and 'M2_SMTP_PASSWORD, which is not set' in rep.failures[0].error
    plain = EmailNotifier('127.0.0.1', c.port, 'a@example.com', ['b@example.com'], retries=0)  # no STARTTLS: refused
    assert not notify([EVENT], {'hook': plain}).ok


# --- from a rules file to the receivers -----------------------------------------------------------------------

def test_rules_file_notifiers_end_to_end(tmp_path, smtp_server, monkeypatch):
    inbox = Inbox()
    c = smtp_server(inbox)
    with Receiver(codes=[500]) as rx:
        monkeypatch.setenv('M2_HOOK', rx.url)
        (tmp_path / 'alerts.yaml').write_text(f"""
notifiers:
  hook: {{type: webhook, url: env:M2_HOOK, timeout: 2, retries: 2, backoff: 0.01}}
  mail: {{type: email, host: 127.0.0.1, port: {c.port}, from: a@example.com, to: [b@example.com]}}
  log: {{type: file, path: out/alerts.jsonl}}
rules:
  - {{name: auc-floor, metric: roc_auc, comparator: '<', threshold: 0.75, notify: [hook, mail, log]}}
""")
        rules = AlertRules.load(tmp_path / 'alerts.yaml')
        ns = build_notifiers(rules)
        event = AlertEvent(**{**EVENT.to_dict(), 'notify': ('hook', 'mail', 'log')})
        rep = notify([event], ns)
    assert rep.ok and [d.attempts for d in rep.deliveries] == [2, 1, 1], rep
    assert len(rx.bodies) == 1 and len(inbox.messages) == 1
    assert json.loads((tmp_path / 'out' / 'alerts.jsonl').read_text())['rule'] == 'auc-floor'
    assert isinstance(ns['log'], FileNotifier)


def test_file_notifier_failure_is_recorded(tmp_path):
    blocker = tmp_path / 'not-a-dir'
    blocker.write_text('')
    rep = notify([EVENT], {'hook': FileNotifier(blocker / 'alerts.jsonl', retries=1, backoff=0.01)})
    assert rep.failures[0].attempts == 2


def test_delivery_error_is_an_mlwork_error():
    assert not DeliveryError('x').permanent and DeliveryError('x', permanent=True).permanent
