"""Every user error of `mlwork validate` and `mlwork ingest` is exit 1 or 2 with one line on stderr, never 4,
and the same input gets the same code with and without `--dataset` (real `mlwork` processes)."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

CONTRACT = 'name: c\ncolumns:\n  id: {dtype: Int64, nullable: false}\n  x: {dtype: Float64, min: 0, max: 100}\n'


def assert_one_line(r, code):
    assert r.code == code, (r.code, r.out, r.err)
    assert 'Traceback' not in r.err and 'internal error' not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), r.err
    return lines[0]


def stored(ws, name):
    "Whether the workspace holds a Delta table for dataset `name`."
    return (Path(ws[1]) / 'data' / name / '_delta_log').is_dir()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('batches')
    good = pl.DataFrame({'id': [1, 2, 3], 'x': [1.0, 2.0, 3.0]})
    good.write_parquet(d / 'good.parquet')
    data = (d / 'good.parquet').read_bytes()
    (d / 'truncated.parquet').write_bytes(data[: len(data) // 2])
    (d / 'garbage.parquet').write_bytes(b'PAR1' + bytes(range(256)) * 4 + b'PAR1')
    (d / 'zero.parquet').write_bytes(b'')
    good.head(0).write_parquet(d / 'norows.parquet')
    pl.DataFrame().write_parquet(d / 'nocols.parquet')
    pl.DataFrame({'id': [1, 2], 'x': [1.0, 2.0], 'Note': ['a', 'b'], 'note': ['c', 'd']}).write_parquet(d / 'case.parquet')
    pl.DataFrame({'ID': [1, 2], 'x': [1.0, 2.0]}).write_parquet(d / 'case_contract.parquet')
    (d / 'zero.csv').write_bytes(b'')
    (d / 'norows.csv').write_text('id,x\n')
    (d / 'case.csv').write_text('id,x,Note,note\n1,1.0,a,b\n')
    pl.DataFrame({'id': [1, 2], 'x': [1.0, 500.0]}).write_parquet(d / 'blocked.parquet')
    (d / 'c.yaml').write_text(CONTRACT)
    (d / 'empty.yaml').write_text('name: e\ncolumns: {}\n')
    (d / 'nocolumns.yaml').write_text('name: e\n')
    (d / 'malformed.yaml').write_text('columns:\n  id: {dtype: Int64\n')
    (d / 'unknown.yaml').write_text('columns:\n  id: {dtype: Int64, maximum: 3}\n')
    (d / 'baddtype.yaml').write_text('columns:\n  id: {dtype: Integer}\n')
    (d / 'badbar.yaml').write_text('materiality: {numeric: -1}\ncolumns:\n  id: {dtype: Int64}\n')
    (d / 'casecontract.yaml').write_text('columns:\n  id: {dtype: Int64}\n  ID: {dtype: Int64}\n')
    (d / 'python.yaml').write_text("columns: !!python/object/apply:os.system ['echo hi']\n")
    return d


@pytest.fixture
def ws(cli, tmp_path):
    assert cli('init', '--home', 'ws').code == 0
    return ('--home', str(tmp_path / 'ws'))


BAD_BATCHES = [
    ('truncated.parquet', 'not a readable Parquet file'),
    ('garbage.parquet', 'not a readable Parquet file'),
    ('zero.parquet', 'not a readable Parquet file'),
    ('norows.parquet', 'has no rows'),
    ('nocols.parquet', 'has no columns'),
    ('case.parquet', '`Note` and `note`, whose names differ only in case'),
    ('case_contract.parquet', "column `ID` of "),
    ('zero.csv', 'zero.csv'),
    ('norows.csv', 'has no rows'),
    ('case.csv', 'differ only in case'),
]


@pytest.mark.parametrize('name, says', BAD_BATCHES)
def test_bad_batch_is_exit_2_with_and_without_dataset(cli, files, ws, name, says):
    plain = cli('validate', str(files / name), '--contract', str(files / 'c.yaml'), *ws)
    into = cli('validate', str(files / name), '--contract', str(files / 'c.yaml'), '--dataset', 'd', *ws)
    for r in (plain, into):
        assert says in assert_one_line(r, 2)
    assert not stored(ws, 'd') and not stored(ws, 'd__quarantine')


BAD_CONTRACTS = [
    ('empty.yaml', 'columns is empty: a contract names at least one column'),
    ('nocolumns.yaml', 'columns is missing'),
    ('malformed.yaml', 'not valid YAML'),
    ('unknown.yaml', "unknown field 'maximum'"),
    ('baddtype.yaml', 'columns.id.dtype must be one of'),
    ('badbar.yaml', 'materiality.numeric must be a positive number'),
    ('casecontract.yaml', 'differ only in case'),
    ('python.yaml', 'not valid YAML'),
    ('missing.yaml', 'does not exist'),
]


@pytest.mark.parametrize('name, says', BAD_CONTRACTS)
def test_bad_contract_is_exit_2_with_and_without_dataset(cli, files, ws, name, says):
    for extra in ((), ('--dataset', 'd')):
        r = cli('validate', str(files / 'good.parquet'), '--contract', str(files / name), *extra, *ws)
        assert says in assert_one_line(r, 2)
    assert not stored(ws, 'd')


def test_blocking_is_exit_1_and_a_pass_is_0_either_way(cli, files, ws):
    for extra in ((), ('--dataset', 'd')):
        r = cli('validate', str(files / 'blocked.parquet'), '--contract', str(files / 'c.yaml'), *extra, *ws)
        assert r.code == 1 and 'BLOCKED' in r.out and 'Traceback' not in r.err, (r.code, r.out, r.err)
        r = cli('validate', str(files / 'good.parquet'), '--contract', str(files / 'c.yaml'), *extra, *ws)
        assert r.code == 0, (r.out, r.err)


def test_bad_dataset_name_is_refused_before_reading(cli, files, ws):
    r = cli('validate', str(files / 'garbage.parquet'), '--contract', str(files / 'c.yaml'), '--dataset', 'Bad Name', *ws)
    assert '--dataset must be a dataset name' in assert_one_line(r, 2)


@pytest.mark.parametrize('name, says', [
    ('truncated.parquet', 'not a readable Parquet file'),
    ('garbage.parquet', 'not a readable Parquet file'),
    ('zero.parquet', 'not a readable Parquet file'),
    ('norows.parquet', 'has no rows'),
    ('nocols.parquet', 'has no columns'),
    ('case.parquet', '`Note` and `note`, whose names differ only in case'),
    ('zero.csv', 'zero.csv'),
    ('norows.csv', 'has no rows'),
    ('case.csv', 'differ only in case'),
])
def test_ingest_bad_batch_is_exit_2(cli, files, ws, name, says):
    assert says in assert_one_line(cli('ingest', 'd', str(files / name), *ws), 2)
    assert not stored(ws, 'd')


def test_case_clash_with_the_dataset_is_refused_before_anything_is_written(cli, files, ws, tmp_path):
    pl.DataFrame({'id': [1], 'x': [1.0], 'note': ['a']}).write_parquet(tmp_path / 'lower.parquet')
    pl.DataFrame({'id': [2], 'x': [1.0], 'NOTE': ['b']}).write_parquet(tmp_path / 'upper.parquet')
    assert cli('ingest', 'i', str(tmp_path / 'lower.parquet'), *ws).code == 0
    line = assert_one_line(cli('ingest', 'i', str(tmp_path / 'upper.parquet'), *ws), 2)
    assert "column `NOTE` of" in line and "dataset `i`'s column `note`" in line
    assert cli('validate', str(tmp_path / 'lower.parquet'), '--contract', str(files / 'c.yaml'), '--dataset', 'd', *ws).code == 0
    line = assert_one_line(cli('validate', str(tmp_path / 'upper.parquet'), '--contract', str(files / 'c.yaml'),
                               '--dataset', 'd', *ws), 2)
    assert "dataset `d`'s column `note`" in line
    hist = cli('history', 'd', *ws, '--json').json()['versions']
    assert len(hist) == 1 and stored(ws, 'd')
    assert not stored(ws, 'd__quarantine') and not list(Path(ws[1], 'tmp').glob('spill-*'))
