"""Personal data kept out of models and monitors by default (issue 15, item 6), and training sample weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import run_mlwork_in_process
from mlwork.checks import select_columns
from mlwork.core import DataError, InvalidParameter
from mlwork.datasets import load_acs
from mlwork.drift.multivariate import DomainClassifierDrift
from mlwork.drift.univariate import DriftDetector
from mlwork.drift.windows import drift_over_time
from mlwork.models.card import model_card
from mlwork.models.train import LGBMTrainer, train_model
from mlwork.synthetic import generate
from mlwork.synthetic_pii import PII_COLUMNS

PII = {'name': 'person_name', 'email': 'email', 'phone': 'phone', 'card_number': 'payment_card'}


@pytest.fixture(scope='module')
def credit():
    return generate('credit', n_rows=3_000, seed=0, pii=True).frame


def test_generator_pii_columns_are_the_ones_we_expect():
    assert set(PII_COLUMNS) == set(PII)


def test_cli_train_on_credit_with_pii_as_a_new_user(tmp_path):
    """The issue's case: `datasets export --pii`, `ingest`, `train` used name/email/phone/card_number as features."""
    home = ['--home', str(tmp_path / 'ws')]
    run = lambda *a: run_mlwork_in_process(*a, cwd=tmp_path)  # noqa: E731  (six heavy calls: in this process)
    assert run('init', *home).code == 0
    assert run('datasets', 'export', 'credit', 'c.parquet', '--rows', '3000', '--pii').code == 0
    assert run('ingest', 'credit', 'c.parquet', *home).code == 0
    r = run('train', 'credit@0', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '10',
            '--register', 'credit', '--json', *home)
    assert r.code == 0, r.err
    d = r.json()
    assert not set(PII) & set(d['features']), d['features']
    assert d['pii_excluded'] == PII and d['pii_allowed'] == {}
    text = run('train', 'credit@0', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '10', *home)
    assert 'left out as personal data: name (person_name), email (email)' in text.out, text.out
    card = run('models', 'card', 'credit', '1', '--out', 'card', *home)
    assert card.code == 0, card.err
    md = (tmp_path / 'card' / 'model_card.md').read_text()
    assert '## Personal data' in md and '| email | email | left out of the features' in md
    assert 'email (' not in md.split('## Personal data')[0]  # no `email (N categories)` among the features
    named = run('train', 'credit@0', '--target', 'repaid', '--features', 'age', 'email', *home)
    assert named.code == 2 and '`email` (email' in named.err and '--allow-pii email' in named.err, named.err
    assert 'Traceback' not in named.err
    ok = run('train', 'credit@0', '--target', 'repaid', '--features', 'age', 'email', '--allow-pii', 'email',
             '--rounds', '5', '--json', *home)
    assert ok.code == 0, ok.err
    assert ok.json()['features'] == ['age', 'email'] and ok.json()['pii_allowed']['email']['kind'] == 'email'


def test_default_features_leave_pii_out_and_lineage_says_so(credit):
    m = train_model(credit, 'repaid', exclude=['id', 'timestamp'], num_boost_round=10)
    assert m.lineage.pii_excluded == PII and not set(PII) & set(m.features)
    assert m.features == [c for c in credit.columns if c not in {'id', 'timestamp', 'repaid', *PII}]
    assert json.loads(json.dumps(m.lineage.to_dict()))['pii_excluded'] == PII
    assert 'personal data' in m.lineage._repr_html_()


def test_named_pii_feature_is_refused_without_opt_in(credit):
    with pytest.raises(DataError, match=r"`card_number` \(payment_card.*allow_pii=\['card_number'\]"):
        train_model(credit, 'repaid', features=['age', 'card_number'])
    with pytest.raises(DataError, match='not in the data: mail'):
        train_model(credit, 'repaid', features=['age'], allow_pii=['mail'])
    with pytest.raises(InvalidParameter, match="'allow_pii' parameter of train_model"):
        train_model(credit, 'repaid', features=['age'], allow_pii='email')


def test_opt_in_is_per_column_and_recorded_in_lineage_and_card(credit):
    m = train_model(credit.drop('id', 'timestamp'), 'repaid', allow_pii={'phone': 'area code as a region proxy (test)'},
                    num_boost_round=5)
    assert 'phone' in m.features and 'email' not in m.features
    assert m.lineage.pii_excluded == {k: v for k, v in PII.items() if k != 'phone'}
    allowed = m.lineage.pii_allowed['phone']
    assert allowed['kind'] == 'phone' and allowed['reason'] == 'area code as a region proxy (test)' and allowed['by']
    md = model_card(m).to_markdown()
    assert '| phone | phone | used as a feature by opt-in (allow_pii) |' in md and 'area code as a region proxy (test)' in md


def test_acs_without_pii_trains_exactly_as_before():
    acs = load_acs(2015)
    m = train_model(acs, 'employed', num_boost_round=20)
    old_default = [c for c in acs.columns if c != 'employed']       # what features=None meant before the scan
    assert m.features == old_default and m.lineage.pii_excluded == {} and m.lineage.weight is None
    same = train_model(acs, 'employed', features=old_default, num_boost_round=20)
    assert m.model_text() == same.model_text()
    from mlwork.data.batches import content_hash
    assert m.lineage.data['content_hash'] == content_hash(acs.select(*old_default, 'employed'))


def test_acs_drift_columns_unchanged():
    a, b = load_acs(2015), load_acs(2016)
    det = DriftDetector(n_bootstrap=20).fit(a)
    assert list(det.columns_) == list(select_columns(a, None, purpose='drift')) and det.pii_excluded_ == {}
    assert det.score(b).to_dict()['pii_excluded'] == {}


def test_drift_leaves_pii_out_by_default(credit):
    ref, cur = credit.drop('id', 'timestamp').head(1500), credit.drop('id', 'timestamp').tail(1500)
    res = DriftDetector(n_bootstrap=20).fit(ref).score(cur)
    assert not set(PII) & set(res.columns['column'].to_list())
    assert res.pii_excluded == PII and res.to_dict()['pii_excluded'] == PII
    assert 'left out as personal data' in str(res) and 'left out as personal data' in res._repr_html_()
    with pytest.raises(DataError, match=r"allow_pii=\['name'\]"):
        DriftDetector().fit(ref, ['age', 'name'])
    opted = DriftDetector(n_bootstrap=20).fit(ref, ['age', 'name'], allow_pii=['name']).score(cur)
    assert opted.columns['column'].to_list() == ['age', 'name'] and opted.pii_excluded == {}


def test_multivariate_and_windows_leave_pii_out(credit):
    ref, cur = credit.drop('id').head(1500), credit.drop('id').tail(1500)
    dc = DomainClassifierDrift(n_folds=2, num_boost_round=10).fit(ref.drop('timestamp'))
    assert not set(PII) & set(dc.columns_) and dc.pii_excluded_ == PII
    assert dc.score(cur.drop('timestamp')).to_dict()['details']['pii_excluded'] == PII
    wd = drift_over_time(ref, cur, time_column='timestamp', every='1mo', skip_ids=False)
    assert {c: r for c, r in wd.skipped_columns.items() if c in PII} == {c: f'personal data ({k}): left out; opt in with allow_pii'
                                                                          for c, k in PII.items()}


def test_weight_is_used_validated_and_recorded():
    rng = np.random.default_rng(0)
    n = 1_000
    f = pl.DataFrame({'x': rng.normal(size=n), 'g': rng.choice(['a', 'b'], n)})
    f = f.with_columns(y=((pl.col('x') + rng.normal(size=n)) > 0).cast(pl.Int8), w=pl.lit(1.0))
    kw = dict(num_boost_round=20, early_stopping_rounds=None, valid_fraction=0.0)
    plain, ones = train_model(f.drop('w'), 'y', **kw), train_model(f, 'y', weight='w', **kw)
    assert ones.features == ['x', 'g'] and ones.lineage.weight == 'w'
    np.testing.assert_allclose(ones.predict(f.select('x', 'g')), plain.predict(f.select('x', 'g')), rtol=1e-9)
    # a reweighing-style weight changes the model
    rew = f.with_columns(w=pl.when(pl.col('g') == 'a').then(3.0).otherwise(0.5))
    assert train_model(rew, 'y', weight='w', **kw).model_text() != ones.model_text()
    for bad, msg in ((pl.lit(-1.0), 'found 1,000 negative'), (pl.lit(None, pl.Float64), 'found 1,000 null'),
                     (pl.lit(float('inf')), '1,000 NaN or infinite'), (pl.lit(0.0), 'zero on every training row'),
                     (pl.lit('a'), 'must be numeric')):
        with pytest.raises(DataError, match=msg):
            train_model(f.with_columns(w=bad), 'y', weight='w', **kw)
    with pytest.raises(DataError, match='cannot also be a feature'):
        train_model(f, 'y', weight='w', features=['x', 'w'])
    with pytest.raises(DataError, match='Weight column `v` not found'):
        train_model(f, 'y', weight='v')
    with pytest.raises(InvalidParameter, match="'weight' parameter of train_model must be unset with backend='dask'"):
        train_model(f, 'y', weight='w', backend='dask')
    t = LGBMTrainer(weight='w', **kw).fit(f, 'y')
    assert t.lineage_.weight == 'w' and t.get_params()['weight'] == 'w'


def test_scan_cost_is_bounded_by_the_sample():
    """The guard scans a seeded sample: on 200,000 rows it reads at most `sample` rows."""
    from mlwork.data.pii_guard import guard_pii
    big = generate('credit', n_rows=200_000, seed=1, pii=True).frame
    sel = guard_pii(big, candidates=big.columns, sample=2_000)
    assert sel.excluded == PII and sel.sample == 2_000 and sel.seconds < 5
