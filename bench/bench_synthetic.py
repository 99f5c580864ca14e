"""mlwork.synthetic against scikit-learn's make_classification (same rows × as many feature columns)
and, for the PII columns, against Faker (row by row, so at fewer rows: compare rows per second)."""
from __future__ import annotations

from harness import Case, Measure

NAME = 'synthetic'
DESCRIPTION = 'seeded generators vs sklearn make_classification; PII columns vs Faker'
DEFAULT_ROWS = 10_000_000
DEFAULT_PEER_ROWS = 100_000  # Faker makes a few thousand rows per second


def _make_classification(rows: int, n_features: int, seed: int):
    from sklearn.datasets import make_classification
    return lambda: make_classification(n_samples=rows, n_features=n_features, n_informative=max(2, n_features // 2),
                                       n_redundant=0, random_state=seed)


def _faker_pii(rows: int, seed: int):
    from faker import Faker

    def run():
        fake = Faker('en_US')
        fake.seed_instance(seed)
        return {'name': [fake.name() for _ in range(rows)], 'email': [fake.email() for _ in range(rows)],
                'phone': [fake.phone_number() for _ in range(rows)],
                'card_number': [fake.credit_card_number() for _ in range(rows)]}
    return run


def cases(rows: int, peer_rows: int, seed: int) -> list[Case]:
    from mlwork.synthetic import Drift, LabelShift, generate
    from mlwork.synthetic_pii import generate_pii

    def ours(name: str, **kw):
        return lambda: generate(name, n_rows=rows, seed=seed, **kw)

    # feature columns of each frame (not id, timestamp or target): credit 9 + sex, fraud 8, demand 6
    width = {'credit': 10, 'fraud': 8, 'demand': 6}
    peer = {k: Measure(f'sklearn make_classification ({w} features)', _make_classification(rows, w, seed), rows, key=f'mc{w}')
            for k, w in width.items()}
    knobs = dict(bias=0.1, drift=[Drift(('income', 'age'), 0.5, start='2024-07-01'), Drift('region', 0.2, start='2024-07-01')],
                 label_shift=LabelShift(0.05, start='2024-10-01'), missing=0.05, outliers=0.01, corrupt=0.01)
    return [
        Case('credit', Measure('generate_credit', ours('credit'), rows), peer['credit']),
        Case('fraud', Measure('generate_fraud', ours('fraud'), rows), peer['fraud']),
        Case('demand', Measure('generate_demand', ours('demand'), rows), peer['demand'],
             note='demand is a regression dataset; the peer still makes classification data of the same shape.'),
        Case('credit+knobs', Measure('generate_credit, every knob', ours('credit', **knobs), rows), peer['credit'],
             note='bias 0.1, drift of income, age (0.5 std) and region (0.2), label shift 0.05, '
                  'missing 5 %, outliers 1 %, corrupt 1 %.'),
        Case('credit+pii', Measure('generate_credit, pii=True', ours('credit', pii=True), rows), peer['credit']),
        Case('pii', Measure('generate_pii', lambda: generate_pii(rows, seed=seed), rows),
             Measure('Faker name, email, phone_number, credit_card_number', _faker_pii(peer_rows, seed), peer_rows),
             note=f'Faker runs at {peer_rows:,} rows (row by row); the ratio compares rows per second.'),
    ]
