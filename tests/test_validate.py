"""System tests of mlwork.data.validation: injected corruption lands in quarantine with the right reason, nothing is dropped,
clean batches are not quarantined by blocking checks, bad inputs give clear errors, memory stays bounded."""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mlwork.core import ConfigError, ContractViolation, DataError, InvalidParameter
from mlwork.synthetic import generate
from mlwork.data.contracts import ColumnRule, Contract, Freshness, infer_contract
from mlwork.data.validation import validate

N = 50_000
NOW = dt.datetime(2025, 1, 1, 12)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def credit_contract():
    ref = generate('credit', n_rows=N, seed=1, missing=0.02)  # clean: no corrupt rows, no outliers
    return infer_contract(ref.frame, key='id', time_column='timestamp', max_age='2d', name='credit')


@pytest.fixture(scope='module')
def corrupted(credit_contract):
    data = generate('credit', n_rows=N, seed=0, corrupt=0.01, outliers=0.01, missing=0.02)
    return data, validate(data.frame, credit_contract, now=NOW)


def _joined(data, report):
    truth = data.truth.with_row_index('_row').with_columns(pl.col('_row').cast(pl.Int64))
    return truth.join(report.quarantine.select('_row', '_reasons'), on='_row', how='left')


def test_nothing_dropped(corrupted):
    data, r = corrupted
    assert r.valid.height + r.quarantine.height == data.frame.height == N
    rows = np.sort(np.concatenate([r.quarantine['_row'].to_numpy(),
                                   np.setdiff1d(np.arange(N), r.quarantine['_row'].to_numpy())]))
    assert (rows == np.arange(N)).all()
    assert r.quarantine['_row'].is_unique().all() and r.quarantine['_reasons'].list.len().min() >= 1
    # valid holds exactly the rows not quarantined, converted: ids match, income parsed to Float64
    assert r.valid.schema['income'] == pl.Float64
    kept = data.frame.with_row_index('_row').filter(~pl.col('_row').is_in(r.quarantine['_row'].implode()))
    assert kept['id'].to_list() == r.valid['id'].to_list()
    assert np.allclose(kept['income'].cast(pl.Float64).to_numpy(), r.valid['income'].to_numpy(), equal_nan=True)


def test_every_corrupt_row_quarantined_with_its_reason(corrupted):
    data, r = corrupted
    j = _joined(data, r)
    bad = j.filter(pl.col('corrupt').is_not_null())
    assert bad.height == round(0.01 * N)
    assert bad['_reasons'].null_count() == 0, 'a corrupt row escaped quarantine'
    for kind, reasons in zip(bad['corrupt'].cast(pl.String), bad['_reasons']):
        what, column = kind.split(':')
        mine = [x for x in reasons if x.startswith(f'{column}: ')]
        if what == 'impossible':
            assert any(' below min ' in x or ' above max ' in x for x in mine), (kind, reasons)
        else:
            assert any(x.endswith(' is not a Float64') and "'" in x for x in mine), (kind, reasons)
    # the wrong-typed values appear in the reason as the raw text, e.g. 'n/a' or '12,000$'
    texts = {x.split("'")[1] for rs in bad.filter(pl.col('corrupt') == 'wrong_type:income')['_reasons'] for x in rs
             if x.startswith('income: ')}
    assert {'n/a', 'unknown', '#VALUE!'} <= texts and any(t.endswith('$') and ',' in t for t in texts)


def test_outliers_flagged_on_their_column(corrupted):
    data, r = corrupted
    j = _joined(data, r).filter(pl.col('outlier').is_not_null())
    assert j['_reasons'].null_count() == 0
    for column, reasons in zip(j['outlier'].cast(pl.String), j['_reasons']):
        assert any(x.startswith(f'{column}: ') and ('outlier bound' in x or 'above max' in x) for x in reasons)


def test_clean_rows_only_get_warnings(corrupted):
    data, r = corrupted
    j = _joined(data, r).filter(pl.col('corrupt').is_null() & pl.col('outlier').is_null())
    flagged = j.filter(pl.col('_reasons').is_not_null())
    assert all('outlier bound' in x for rs in flagged['_reasons'] for x in rs), 'a clean row failed a blocking check'
    assert flagged.height / j.height < 0.005  # measured: 0.22 % (outlier, warn), 0 blocking


def test_counts_against_numpy_oracle(corrupted, credit_contract):
    data, r = corrupted
    f = data.frame
    get = lambda c, k: r.checks.filter((pl.col('column') == c) & (pl.col('check') == k))['failed_rows'].item()
    age = f['age'].to_numpy(allow_copy=True).astype(float)
    rule = credit_contract.columns['age']
    assert get('age', 'range') == int(np.nansum((age < rule.min) | (age > rule.max)))
    parsed = np.array([_parse(x) for x in f['income'].to_list()], dtype=float)
    bad_text = sum(1 for x in f['income'].to_list() if x is not None and math.isnan(_parse(x)))
    assert get('income', 'type') == bad_text
    inc = credit_contract.columns['income']
    ok = np.isfinite(parsed)
    assert get('income', 'range') == int(((parsed[ok] < inc.min) | (parsed[ok] > inc.max)).sum())
    assert get('income', 'outlier') == int(((parsed[ok] > inc.q_high) & (parsed[ok] <= inc.max)).sum())
    nulls = f['age'].null_count()
    row = r.checks.filter((pl.col('column') == 'age') & (pl.col('check') == 'null_rate')).row(0, named=True)
    assert row['failed_rows'] == nulls and row['share'] == nulls / N and row['passed']


def _parse(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def test_clean_batch_passes(credit_contract):
    clean = generate('credit', n_rows=N, seed=2, missing=0.02).frame
    r = validate(clean, credit_contract, now=dt.datetime(2025, 1, 1))
    assert not r.blocking, r.failed
    block = r.checks.filter(pl.col('severity') == 'block')
    assert block['passed'].all()
    assert block.filter(pl.col('check') != 'null_rate')['failed_rows'].fill_null(0).sum() == 0  # no row quarantined by a block check
    assert r.quarantine.height / N < 0.005  # outlier warnings only: 0.2 % measured
    assert r.valid.schema == clean.schema
    r.raise_if_blocking()


def test_blocking_report_and_exception(corrupted, tmp_path):
    data, r = corrupted
    assert r.blocking
    with pytest.raises(ContractViolation, match=r"blocking check\(s\) of contract 'credit'") as e:
        r.raise_if_blocking()
    assert '`age` range in 62 rows' in str(e.value) and '`income` type' in str(e.value)
    d = json.loads(json.dumps(r.to_dict()))
    assert d['valid_rows'] + d['quarantined_rows'] == N and d['blocking'] is True
    path = r.to_report('credit batch').save(tmp_path / 'validation.html')
    html_text = path.read_text()
    assert '<svg' in html_text and 'is not a Float64' in html_text and 'Failures, with examples' in html_text
    assert html_text.count('is not a Float64') <= 12  # examples, not a dump of the 236 rows
    assert len(html_text) < 400_000


def test_quarantines_of_different_batches_append(credit_contract):
    a = validate(generate('credit', n_rows=2000, seed=3, corrupt=0.05).frame, credit_contract, now=NOW)
    b = validate(generate('credit', n_rows=2000, seed=4, corrupt=0.05, corrupt_kinds=['impossible']).frame,
                 credit_contract, now=NOW)
    assert a.quarantine.schema == b.quarantine.schema  # income String in one batch, Float64 in the other
    assert pl.concat([a.quarantine, b.quarantine]).height == a.quarantine.height + b.quarantine.height


def test_lazyframe_same_as_dataframe(credit_contract):
    f = generate('credit', n_rows=5000, seed=5, corrupt=0.02, outliers=0.02).frame
    a, b = validate(f, credit_contract, now=NOW), validate(f.lazy(), credit_contract, now=NOW)
    assert a.quarantine.equals(b.quarantine) and a.valid.equals(b.valid) and a.checks.equals(b.checks)


# --- bad inputs -------------------------------------------------------------------------------------------------

SMALL = Contract({'id': ColumnRule('id', 'Int64', nullable=False),
                  'x': ColumnRule('x', 'Float64', nullable=True, max_null_rate=0.5, min=0, max=10, q_high=8),
                  'c': ColumnRule('c', 'String', allowed=['a', 'b'])},
                 key=['id'], row_count=(1, 100), name='small')


def test_empty_frames():
    r = validate(pl.DataFrame(schema={'id': pl.Int64, 'x': pl.Float64, 'c': pl.String}), SMALL)
    assert (r.valid.height, r.quarantine.height) == (0, 0)
    assert r.valid.schema == {'id': pl.Int64, 'x': pl.Float64, 'c': pl.String}
    assert r.quarantine.columns == ['id', 'x', 'c', '_row', '_reasons']
    rc = r.checks.filter(pl.col('check') == 'row_count').row(0, named=True)
    assert not rc['passed'] and r.blocking  # 0 rows, at least 1 expected
    r = validate(pl.DataFrame(), SMALL)  # no columns at all: every column missing
    assert set(r.checks.filter(pl.col('check') == 'missing_column')['column']) == {'id', 'x', 'c'}
    assert r.valid.height + r.quarantine.height == 0


def test_missing_and_all_null_columns():
    batch = pl.DataFrame({'id': [1, 2, 3], 'c': [None, None, None], 'extra': [1, 2, 3]})  # x missing, c all-null (Null dtype)
    r = validate(batch, SMALL)
    assert r.checks.filter(pl.col('check') == 'missing_column')['column'].to_list() == ['x']
    nr = r.checks.filter((pl.col('check') == 'null_rate') & (pl.col('column') == 'x')).row(0, named=True)
    assert nr['share'] == 1.0 and not nr['passed']
    assert r.valid.height == 3 and r.valid.schema['x'] == pl.Float64 and r.valid.schema['c'] == pl.String
    assert r.valid.columns == ['id', 'x', 'c', 'extra']
    strict = Contract({'id': ColumnRule('id', 'Int64', nullable=False), 'y': ColumnRule('y', 'Float64', nullable=False)})
    r = validate(pl.DataFrame({'id': [1, 2], 'y': pl.Series([None, None], dtype=pl.Float64)}), strict)
    assert r.quarantine['_reasons'].to_list() == [['y: null in a non-nullable column']] * 2
    r = validate(pl.DataFrame({'id': [1, 2]}), strict)
    assert r.quarantine['_reasons'].to_list() == [['y: column missing from the batch (nullable: false)']] * 2
    # infer_contract on an all-null column
    c = infer_contract(pl.DataFrame({'a': [None, None], 'b': pl.Series([None, None], dtype=pl.Float64)}))
    assert c.columns['a'].dtype == 'String' and c.columns['b'].to_dict() == {'dtype': 'Float64', 'nullable': True,
                                                                            'max_null_rate': 1.0}


def test_nan_and_inf():
    batch = pl.DataFrame({'id': [1, 2, 3, 4, 5], 'x': [1.0, float('nan'), float('inf'), float('-inf'), None],
                          'c': ['a'] * 5})
    r = validate(batch, SMALL)
    assert r.quarantine['_reasons'].to_list() == [['x: NaN is not a finite number'], ['x: inf is not a finite number'],
                                                  ['x: -inf is not a finite number']]
    text = pl.DataFrame({'id': [1, 2, 3], 'x': ['nan', 'inf', '2.5'], 'c': ['a'] * 3})  # as text, parsed
    r = validate(text, SMALL)
    assert r.quarantine['_reasons'].to_list() == [['x: nan is not a finite number'], ['x: inf is not a finite number']]
    allow = Contract({'x': ColumnRule('x', 'Float64', finite=False, min=0, max=10)})
    r = validate(pl.DataFrame({'x': [float('nan'), 11.0]}), allow)
    assert r.quarantine['_reasons'].to_list() == [['x: 11.0 above max 10']]


def test_type_conversions():
    c = Contract({'n': ColumnRule('n', 'Int64'), 'b': ColumnRule('b', 'Boolean'), 't': ColumnRule('t', 'Datetime'),
                  'e': ColumnRule('e', 'Enum', allowed=['lo', 'hi'])})
    batch = pl.DataFrame({'n': [1.0, 41.5, 3.0, None], 'b': ['true', 'False', 'yes', None],
                          't': ['2024-01-01', '2024-01-02T03:00:00', 'soon', None], 'e': ['lo', 'hi', 'mid', None]})
    r = validate(batch, c)
    assert r.valid.schema == {'n': pl.Int64, 'b': pl.Boolean, 't': pl.Datetime('us'), 'e': pl.Enum(['lo', 'hi'])}
    assert r.valid.rows() == [(1, True, dt.datetime(2024, 1, 1), 'lo'), (None, None, None, None)]
    reasons = dict(zip(r.quarantine['_row'].to_list(), r.quarantine['_reasons'].to_list()))
    assert "n: '41.5' is not an Int64" in reasons[1]
    assert reasons[2] == ["b: 'yes' is not a Boolean", "t: 'soon' is not a Datetime", "e: 'mid' is not an allowed category"]
    assert r.checks.filter(pl.col('check') == 'dtype').height == 4


def test_duplicate_keys_and_unique():
    c = Contract({'a': ColumnRule('a', 'Int64'), 'b': ColumnRule('b', 'String'), 'u': ColumnRule('u', 'Int64', unique=True)},
                 key=['a', 'b'])
    batch = pl.DataFrame({'a': [1, 1, 1, None, None], 'b': ['x', 'x', 'y', 'z', 'z'], 'u': [1, 2, 3, 3, None]})
    r = validate(batch, c)
    got = dict(zip(r.quarantine['_row'].to_list(), r.quarantine['_reasons'].to_list()))
    assert got == {0: ['duplicate key (a, b) = (1, x)'], 1: ['duplicate key (a, b) = (1, x)'],
                   2: ['u: 3 is repeated (unique: true)'], 3: ['u: 3 is repeated (unique: true)']}


def test_column_names_and_reserved_names():
    r = validate(pl.DataFrame({'id': [1], 'x': [1.0], 'c': ['a'], '': [0]}), SMALL)  # an empty column name is just extra
    assert r.checks.filter(pl.col('check') == 'extra_column')['column'].to_list() == ['']
    with pytest.raises(DataError, match='column `_row` of the batch clashes'):
        validate(pl.DataFrame({'id': [1], '_row': [0]}), SMALL)
    with pytest.raises(ConfigError, match='columns has a column name that is not a non-empty string'):
        Contract.from_yaml('columns:\n  "": {dtype: Int64}\n')
    with pytest.raises(ConfigError, match="found the key 'a' twice"):
        Contract.from_yaml('columns:\n  a: {dtype: Int64}\n  a: {dtype: String}\n')


def test_malformed_yaml_and_unknown_fields(tmp_path):
    p = tmp_path / 'credit.yaml'
    p.write_text('columns:\n  age: {dtype: Int64\n')
    with pytest.raises(ConfigError, match=r'credit\.yaml, line \d+, column \d+: not valid YAML'):
        Contract.load(p)
    cases = {'columns: {age: {dtype: Int64}}\nkey: [id]\n': "key names 'id', which is not among the columns (age)",
             'columns: {age: {dtype: Int64}}\nfreshness: {column: ts}\n': "freshness.column names 'ts'",
             'columns: {age: {dtype: Integer}}\n': "columns.age.dtype must be one of Int8",
             'columns: {age: {dtype: Int64, nullable: maybe}}\n': "columns.age.nullable must be true or false (found str 'maybe')",
             'columns: {age: {dtype: Int64}}\nseverity: {range: fatal}\n': "severity.range must be one of warn, block, off",
             'columns: {age: {dtype: Int64}}\nrow_count: {min: 10, max: 5}\n': 'row_count has min (10) above max (5)',
             'version: 2\ncolumns: {}\n': 'version must be 1',
             'name: x\n': 'columns is missing',
             '': 'the top level must be a mapping'}
    for text, msg in cases.items():
        with pytest.raises(ConfigError, match='^contract.yaml') as e:
            Contract.from_yaml(text)
        assert msg in str(e.value), (text, str(e.value))
    # a failed save leaves the old file intact
    good = SMALL.save(p)
    before = good.read_text()
    with pytest.raises(AttributeError):
        Contract.save(object(), p)
    assert p.read_text() == before and Contract.load(p) == SMALL


def test_bad_parameters():
    with pytest.raises(InvalidParameter, match="The 'batch' parameter of validate must be a polars DataFrame"):
        validate({'a': [1]}, SMALL)
    with pytest.raises(InvalidParameter, match="The 'contract' parameter of validate"):
        validate(pl.DataFrame({'a': [1]}), 'contract.yaml')
    with pytest.raises(InvalidParameter, match="'time_column' parameter of infer_contract must be a Date or Datetime"):
        infer_contract(pl.DataFrame({'a': [1]}), time_column='a')


def test_severity_overrides_from_yaml():
    text = SMALL.to_yaml().replace('  outlier: warn', '  outlier: block')
    c = Contract.from_yaml(text)
    r = validate(pl.DataFrame({'id': [1, 2], 'x': [9.0, 1.0], 'c': ['a', 'b']}), c)
    assert r.blocking and r.quarantine['_reasons'].to_list() == [['x: 9.0 above outlier bound 8']]
    off = Contract.from_yaml(SMALL.to_yaml().replace('    q_high: 8\n', '    q_high: 8\n    severity: {outlier: off}\n'))
    r = validate(pl.DataFrame({'id': [1, 2], 'x': [9.0, 1.0], 'c': ['a', 'b']}), off)
    assert r.quarantine.height == 0 and 'outlier' not in r.checks['check'].to_list()


def test_freshness_and_row_count():
    c = Contract({'ts': ColumnRule('ts', 'Datetime(us, UTC)')}, freshness=Freshness('ts', '36h'), row_count=(2, 3),
                 severity={'freshness': 'block'})
    ts = pl.Series([dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc)])
    batch = pl.DataFrame({'ts': ts})
    assert not validate(batch, c, now=dt.datetime(2024, 5, 3, 11, tzinfo=dt.timezone.utc)).blocking
    r = validate(batch, c, now=dt.datetime(2024, 5, 3, 13, tzinfo=dt.timezone.utc))
    assert r.blocking and '1.5 d old (max 36h)' in r.failed['detail'][0]
    r = validate(pl.concat([batch] * 2), c, now=dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc))
    assert r.failed['check'].to_list() == ['row_count'] and r.quarantine.height == 0  # batch checks quarantine nothing


@pytest.mark.slow
def test_memory_bounded_on_a_million_rows():
    "Peak RSS of validate above the batch, in a fresh process (bench/bench_validate.py measures 10 M rows)."
    code = ('import sys; sys.path.insert(0, "bench"); import bench_validate as b, json; '
            'print(json.dumps(b.memory(1_000_000)))')
    p = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout.strip().splitlines()[-1])
    assert m['valid_rows'] + m['quarantined_rows'] == 1_000_000
    assert m['peak_extra_over_arrow'] < 2.0, m


def test_reasons_capped_and_chunked(monkeypatch):
    "Every check fails on every row: max_reasons caps the list with a count, chunking changes nothing."
    import mlwork.data.validation as mv
    ref = pl.DataFrame({'id': range(100), **{f'x{i}': [float(j) for j in range(100)] for i in range(8)}})
    c = infer_contract(ref, key='id')
    bad = pl.DataFrame({'id': [0] * 3000, **{f'x{i}': [1e9 + j for j in range(3000)] for i in range(8)}})
    r = validate(bad, c)
    reasons = r.quarantine['_reasons'].to_list()
    assert r.quarantine.height == 3000 and r.quarantine['_row'].to_list() == list(range(3000))
    assert reasons[7] == ['x0: 1000000007.0 above max 198', 'x1: 1000000007.0 above max 198', 'x2: 1000000007.0 above max 198',
                          'x3: 1000000007.0 above max 198', 'x4: 1000000007.0 above max 198', '… and 4 more (see checks)']
    full = validate(bad, c, max_reasons=None)
    assert full.quarantine['_reasons'].list.len().to_list() == [9] * 3000
    assert validate(bad, c, max_reasons=9).quarantine['_reasons'].to_list() == full.quarantine['_reasons'].to_list()
    assert r.checks['failed_rows'].sum() == 9 * 3000  # the counts are never capped
    monkeypatch.setattr(mv, '_CHUNK_CELLS', 1)  # 1,024 rows a chunk: three chunks
    small = validate(bad, c, max_reasons=None)
    assert small.quarantine.equals(full.quarantine) and small.examples.equals(full.examples)
    with pytest.raises(InvalidParameter, match='max_reasons'):
        validate(bad, c, max_reasons=0)


@pytest.mark.slow
def test_memory_bounded_when_every_row_fails():
    "1 M rows × 25 columns, every row failing 25 checks: peak RSS stays a bounded multiple of the batch (measured 11.6×)."
    code = ('import sys; sys.path.insert(0, "bench"); import bench_validate as b, json; '
            'print(json.dumps(b.memory(1_000_000, fail="all")))')
    p = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout.strip().splitlines()[-1])
    assert m['quarantined_rows'] == 1_000_000 and m['valid_rows'] == 0
    assert m['reasons'] == 6 * 1_000_000  # 5 reasons and one "… and 20 more" per row
    # before chunking and max_reasons this was 21× (4.1 GiB), and 10 M rows would have needed ~40 GiB
    assert m['peak_extra_over_arrow'] < 15, m


def test_text_and_json_carry_the_same_facts(corrupted):
    "Every failed check `str(report)` prints (e.g. '62 rows failed range on age') is in `to_dict()`, with its count."
    from mlwork.checks import check_result
    _, r = corrupted
    check_result(r)
    text, d = str(r), json.loads(json.dumps(r.to_dict()))
    lines = text.splitlines()
    assert lines[0].startswith("contract 'credit': ") and lines[0].endswith('BLOCKED') and d['verdict'] == 'blocked'
    assert len(d['failed']) == len(lines) - 1 and len(d['failed']) == r.failed.height
    for line, c in zip(lines[1:], d['failed']):
        assert line.split()[:2] == [c['severity'], c['check']]
        if c['failed_rows'] is not None:
            assert f" {c['failed_rows']:>9}  " in line
        assert c['detail'] in line
    age = [c for c in d['failed'] if (c['column'], c['check']) == ('age', 'range')]
    assert age and age[0]['failed_rows'] == 62 and any(' range ' in ln and ' age ' in ln and ' 62 ' in ln for ln in lines)
