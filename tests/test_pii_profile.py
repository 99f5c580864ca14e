"""Personal data kept out of profiles and drift reports by default (issue 15, item 6).

The oracle for "no raw PII" is the synthetic generator's own labelled PII columns (`mlwork.synthetic_pii.PII_COLUMNS`):
none of their raw values may appear in a profile's serialized bytes, its JSON, its notebook view or its report,
unless a column is opted in (and then they do appear: the check can fail).
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mlwork.core import DataError
from mlwork.data.profile import Profile, profile_column, profile_frame, profile_partitions
from mlwork.datasets import load_acs
from mlwork.synthetic import generate
from mlwork.synthetic_pii import PII_COLUMNS

KINDS = {'name': 'person_name', 'email': 'email', 'phone': 'phone', 'card_number': 'payment_card'}


@pytest.fixture(scope='module')
def credit() -> pl.DataFrame:
    return generate('credit', n_rows=5000, seed=0, pii=True).frame


def _leaks(blob: str, frame: pl.DataFrame, cols) -> list[str]:
    "Raw values of `cols` found in `blob`."
    return [v for c in cols for v in frame[c].drop_nulls().unique().to_list() if str(v) in blob]


def _texts(p: Profile) -> str:
    "Everything a profile shows or stores, as one text."
    return '\n'.join([p.to_bytes().decode('latin-1'), json.dumps(p.to_dict(), default=str), p._repr_html_(),
                      p.to_report('Credit').to_html(), repr(p)])


def test_labelled_columns_are_the_ones_left_out(credit):
    assert set(PII_COLUMNS) == set(KINDS)
    p = profile_frame(credit)
    assert p.pii_excluded == KINDS
    assert p.columns == [c for c in credit.columns if c not in KINDS]
    assert p.to_dict()['pii_excluded'] == KINDS and p.to_dict()['pii_allowed'] == {}
    assert p.view.metadata['mlwork.pii_excluded'] == json.dumps(KINDS)


def test_no_raw_pii_anywhere_in_the_profile(credit):
    p = profile_frame(credit)
    blob = _texts(p)
    assert _leaks(blob, credit, KINDS) == []
    assert 'Left out as personal data: name (person_name), email (email), phone (phone), card_number (payment_card)' \
        in p.to_report().to_html()
    assert 'left out as personal data: name (person_name)' in p._repr_html_()
    # the check can fail: an opted-in column's frequent items are raw values
    opted = profile_frame(credit, allow_pii=['email'])
    assert _leaks(_texts(opted), credit, ['email'])
    assert _leaks(_texts(opted), credit, ['name', 'phone', 'card_number']) == []


def test_saved_and_merged_profiles_keep_the_record(credit, tmp_path):
    a, b = profile_frame(credit.head(2000)), profile_frame(credit.tail(3000))
    back = Profile.load(a.save(tmp_path / 'a.bin'))
    assert back.pii_excluded == KINDS
    assert (back + b).pii_excluded == KINDS and (back + b).n_rows == 5000
    clean = profile_frame(credit.drop(list(KINDS)))  # a profile without the record: the merge keeps the other's
    assert clean.pii_excluded == {} and 'mlwork.pii_excluded' not in clean.view.metadata
    assert (clean + a).pii_excluded == KINDS and (a + clean).pii_excluded == KINDS
    opted = profile_frame(credit.head(100), allow_pii={'email': 'domains'})
    merged = a + opted
    assert merged.pii_allowed['email']['reason'] == 'domains' and merged.pii_excluded == KINDS


def test_named_pii_column_refused_without_opt_in(credit):
    with pytest.raises(DataError) as e:
        profile_frame(credit, columns=['age', 'email', 'card_number'])
    msg = str(e.value)
    assert '`email` (email' in msg and '`card_number` (payment_card' in msg
    assert "allow_pii=['email', 'card_number']" in msg and '--allow-pii email,card_number' in msg
    assert 'profiled column' in msg
    p = profile_frame(credit, columns=['age', 'email'], allow_pii=['email'])
    assert p.columns == ['age', 'email'] and p.pii_excluded == {} and p.pii_allowed['email']['kind'] == 'email'
    with pytest.raises(DataError, match='not in the data: e_mail'):
        profile_frame(credit, allow_pii=['e_mail'])
    with pytest.raises(DataError, match='allow_pii'):  # a lazy frame too
        profile_frame(credit.lazy(), columns=['phone'])


def test_partitions_scan_once_and_leave_out_the_same(credit, tmp_path):
    for i in range(3):
        credit.slice(i * 1700, 1700).write_parquet(tmp_path / f'part-{i}.parquet')
    p = profile_partitions(f'{tmp_path}/*.parquet', partition_rows=800)
    assert p.pii_excluded == KINDS and p.n_rows == 5000 and 'email' not in p.columns
    assert _leaks(_texts(p), credit, KINDS) == []
    with pytest.raises(DataError, match="allow_pii=\\['name'\\]"):
        profile_partitions(credit.lazy(), columns=['name'])
    assert profile_partitions(credit.lazy(), allow_pii=['name']).columns[-1] == 'name'


def test_acs_profiles_as_before():
    acs = load_acs(2015)
    p = profile_frame(acs)
    assert p.columns == acs.columns and p.pii_excluded == {} and p.pii_allowed == {}
    assert set(p.view.metadata) == {'mlwork.columns', 'mlwork.dtypes'}  # no PII key is added when nothing was left out
    # the same column profiles the building block makes without any scan (deterministic parts of the summary)
    direct = {c: profile_column(acs[c]).to_summary_dict() for c in acs.columns}
    keys = ('counts/n', 'counts/null', 'types/integral', 'types/string', 'types/fractional', 'cardinality/est')
    for c in acs.columns:
        got = p.view.get_column(c).to_summary_dict()
        assert {k: got.get(k) for k in keys} == {k: direct[c].get(k) for k in keys}, c
        fi = [(i.value, i.est) for i in got.get('frequent_items/frequent_strings', [])]
        assert fi == [(i.value, i.est) for i in direct[c].get('frequent_items/frequent_strings', [])], c


def test_drift_report_names_the_columns_left_out(tmp_path):
    from mlwork.drift.report import DriftSummary, drift_report
    from mlwork.drift.univariate import DriftDetector
    ref = generate('credit', n_rows=1500, seed=1, pii=True).frame.drop('id', 'timestamp')
    cur = generate('credit', n_rows=1500, seed=2, pii=True).frame.drop('id', 'timestamp')
    res = DriftDetector().fit(ref).score(cur)
    assert res.pii_excluded == KINDS
    path = drift_report(res, tmp_path / 'd.html', reference=ref, current=cur)
    doc, twin = path.read_text(), json.loads(path.with_suffix('.json').read_text())
    line = 'Left out as personal data: name (person_name), email (email), phone (phone), card_number (payment_card)'
    assert doc.count(line) == 1
    assert twin['meta']['pii_excluded'] == KINDS
    assert _leaks(doc, ref, KINDS) == [] and _leaks(doc, cur, KINDS) == []
    # opted in: compared, shown, and no line
    opted = DriftDetector().fit(ref.select('age', 'email'), allow_pii=['email']).score(cur.select('age', 'email'))
    s = DriftSummary.from_frames(ref, cur, opted)
    assert 'pii_excluded' not in s.meta and 'personal data' not in drift_report(s, tmp_path / 'o.html').read_text()


def test_cli_profile_says_what_it_left_out(cli, tmp_path):
    generate('credit', n_rows=800, seed=0, pii=True).frame.write_parquet(tmp_path / 'b.parquet')
    r = cli('profile', 'b.parquet', '--out', 'b.bin', '--json')
    assert r.code == 0, r.err
    body = r.json()
    assert body['pii_excluded'] == KINDS and body['pii_allowed'] == {} and not set(KINDS) & set(body['columns'])
    assert Profile.load(tmp_path / 'b.bin').pii_excluded == KINDS
    r = cli('profile', 'b.parquet', '--out', 'b.bin', '--allow-pii', 'email', '--allow-pii', 'phone,name')
    assert r.code == 0, r.err
    assert 'left out as personal data: card_number (payment_card) (opt in with --allow-pii COL)' in r.out
    assert 'personal data profiled by opt-in: email, phone, name' in r.out
    r = cli('profile', 'b.parquet', '--out', 'b.bin', '--allow-pii', 'mail')
    assert r.code == 2 and 'not in the data: mail' in r.err
