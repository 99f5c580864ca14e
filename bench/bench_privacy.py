"""Pseudonymising a column (mlwork.privacy's keyed HMAC-SHA256 tokens, one HMAC per distinct value) against the
straightforward way: the same HMAC computed row by row in Python over the column, as a user would write it with
`hmac` (or pandas `.map`). Both give the same tokens; the ratio is rows per second.

The test suite prints these times (tests/test_privacy.py::test_speed_one_million_rows) and asserts none: speed is
measured here, against a peer in the same run.
"""
from __future__ import annotations

import hmac

from harness import Case, Measure

NAME = 'privacy'
DESCRIPTION = 'pseudonymising 1 M emails (apply_policy) vs a row-by-row hmac loop; scan_pii of 1 M x 10'
DEFAULT_ROWS = 1_000_000
DEFAULT_PEER_ROWS = 1_000_000
KEY = b's' * 32


def _frame(rows: int, seed: int):
    from mlwork.synthetic import generate
    return generate('credit', n_rows=rows, seed=seed, pii=True).frame.select(
        'id', 'age', 'income', 'loan_amount', 'region', 'sex', 'name', 'email', 'phone', 'card_number')


def _row_by_row(emails: list) -> list:
    "Each row's token by hand: the same HMAC-SHA256, prefix and length as PseudonymKey.token."
    return [None if v is None else 'pii_' + hmac.digest(KEY, v.encode(), 'sha256')[:10].hex() for v in emails]


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    from mlwork.privacy import PiiPolicy, PseudonymKey, apply_policy, scan_pii
    frame = _frame(rows, seed)
    key, policy = PseudonymKey.from_bytes(KEY), PiiPolicy({'email': 'pseudonymise'})
    emails = frame['email'].head(peer_rows).to_list()
    ours = apply_policy(frame, policy, key=key)['email']
    assert ours.head(1_000).to_list() == _row_by_row(emails[:1_000]), 'the two sides do not give the same tokens'
    distinct = frame['email'].n_unique()
    return [
        Case('pseudonymise', Measure('apply_policy(email: pseudonymise)', lambda: apply_policy(frame, policy, key=key), rows),
             Measure('hmac.digest row by row (Python list)', lambda: _row_by_row(emails), len(emails)),
             note=f'{distinct:,} distinct emails in {rows:,} rows: mlwork computes one HMAC per distinct value.'),
        Case('scan', Measure('scan_pii (10 columns, 10,000-row sample)', lambda: scan_pii(frame), rows),
             note='No peer: the scan reads a 10,000-row random sample, so its time hardly grows with the rows.'),
    ]
