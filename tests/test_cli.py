"""The real `mlwork` executable: help, init, datasets, demo, and how it fails on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from conftest import run_mlwork_in_process


def assert_one_line_error(r, code=2, contains=None):
    assert r.code == code, (r.code, r.out, r.err)
    assert 'Traceback' not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith('error: ')
    if contains:
        assert contains in lines[0], lines[0]


@pytest.fixture
def cli_in_process(tmp_path):
    """`mlwork` through its entry point in this process (conftest.run_mlwork_in_process): for the tests that make many
    calls of the heavy commands (train, models, drift); the others run the real executable."""
    def run(*args: str, cwd: Path | None = None, env: dict | None = None):
        return run_mlwork_in_process(*args, cwd=cwd or tmp_path, env=env)
    return run


def test_help_lists_commands_and_exit_codes(cli):
    r = cli('--help')
    assert r.code == 0
    for word in ('init', 'demo', 'datasets', 'exit codes:', '130'):
        assert word in r.out
    assert cli('--version').out.startswith('mlwork ')
    assert cli('datasets', 'export', '--help').code == 0


def test_no_command_prints_help_and_exits_2(cli):
    r = cli()
    assert r.code == 2 and 'usage: mlwork' in r.out


@pytest.mark.parametrize('args, contains', [
    (['bogus'], "invalid choice: 'bogus'"),
    (['init', '--bogus'], 'unrecognized arguments: --bogus'),
    (['demo', '--rows', 'ten'], "expected an integer, got 'ten'"),
    (['demo', '--rows', '5'], 'expected an integer >= 1000, got 5'),
    (['datasets', 'export', 'credit'], 'the following arguments are required: OUT'),
    (['datasets', 'export', 'iris', 'x.csv'], "error: NAME must be one of acs, credit"),
    (['datasets', 'export', 'credit', 'x.xlsx'], "error: --format (or the suffix of OUT) must be 'parquet' or 'csv'"),
    (['datasets', 'export', 'credit', 'x.csv', '--bias', '2'], 'expected a number in [0, 1], got 2.0'),
    (['datasets', 'export', 'credit', 'x.csv', '--drift', 'income'], '--drift expects FEATURE[,FEATURE]:MAGNITUDE'),
    (['datasets', 'export', 'credit', 'x.csv', '--drift', 'salary:0.5'], 'salary'),
    (['datasets', 'export', 'acs', 'x.csv', '--years', '2020'], "error: --years must be a year or list of years among 2015"),
    (['datasets', 'export', 'acs', 'x.csv', '--pii'], "takes --rows and --years only"),
    (['datasets', 'show', 'iris'], "unknown dataset 'iris'"),
])
def test_bad_arguments_give_one_line_and_exit_2(cli, tmp_path, args, contains):
    r = cli(*args)
    assert_one_line_error(r, 2, contains)
    assert not (tmp_path / 'x.csv').exists()


def test_errors_are_json_too_when_asked(cli):
    r = cli('datasets', 'export', 'iris', 'x.csv', '--json')
    assert r.code == 2
    body = r.json()
    assert body['ok'] is False and body['exit_code'] == 2 and 'iris' in body['error']


def test_init_is_idempotent_and_keeps_edited_config(cli, tmp_path):
    first = cli('init', '--home', 'ws', '--json')
    assert first.code == 0, first.err
    d = first.json()
    assert d['root'] == str(tmp_path / 'ws') and len(d['created']) >= 2
    cfg = tmp_path / 'ws' / 'mlwork.toml'
    cfg.write_text(cfg.read_text().replace('level = "INFO"', 'level = "DEBUG"'))
    again = cli('init', '--home', 'ws', '--json')
    assert again.code == 0 and again.json()['created'] == []
    assert again.json()['config']['log_level'] == 'DEBUG'
    assert 'level = "DEBUG"' in cfg.read_text()


def test_init_uses_mlwork_home(cli, tmp_path):
    r = cli('init', '--json', env={'MLWORK_HOME': str(tmp_path / 'home')})
    assert r.code == 0 and r.json()['root'] == str(tmp_path / 'home')
    r = cli('init', '--json')
    assert r.json()['root'] == str(tmp_path / '.mlwork')


def test_init_refuses_malformed_config_without_touching_it(cli, tmp_path):
    (tmp_path / 'ws').mkdir()
    bad = '[stores\ndata = "x"\n'
    (tmp_path / 'ws' / 'mlwork.toml').write_text(bad)
    r = cli('init', '--home', 'ws')
    assert_one_line_error(r, 2, 'is not valid TOML')
    assert (tmp_path / 'ws' / 'mlwork.toml').read_text() == bad
    (tmp_path / 'ws' / 'mlwork.toml').write_text('[compute]\nbackend = "spark"\n')
    assert_one_line_error(cli('init', '--home', 'ws'), 2, "[compute] backend must be one of 'local', 'dask'. Found 'spark'")


def test_init_refuses_a_foreign_folder(cli, tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    assert_one_line_error(cli('init', '--home', 'mine'), 2, 'the folder is not empty')
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'
    assert sorted(p.name for p in (tmp_path / 'mine').iterdir()) == ['notes.txt']


def test_datasets_list_and_show(cli):
    r = cli('datasets', 'list', '--json')
    assert r.code == 0
    names = [d['name'] for d in r.json()['datasets']]
    assert names[:1] == ['acs'] and {'credit', 'fraud', 'demand'} <= set(names)
    assert 'acs' in cli('datasets', 'list').out
    s = cli('datasets', 'show', 'acs', '--json').json()
    assert s['target'] == 'employed' and s['schema']['AGEP'] == 'Float64' and s['rows'] == 277_677


@pytest.mark.parametrize('fmt', ['parquet', 'csv'])
def test_datasets_export_roundtrip(cli, tmp_path, fmt):
    r = cli('datasets', 'export', 'fraud', f'f.{fmt}', '--rows', '5000', '--seed', '7', '--json')
    assert r.code == 0, r.err
    d = r.json()
    df = pl.read_parquet(tmp_path / 'f.parquet') if fmt == 'parquet' else pl.read_csv(tmp_path / 'f.csv')
    assert df.height == d['rows'] == 5000 and df.width == d['columns']
    # the same seed gives the same bytes
    r2 = cli('datasets', 'export', 'fraud', f'g.{fmt}', '--rows', '5000', '--seed', '7', '--json')
    assert r2.json()['sha256'] == d['sha256']


def test_export_with_faults_and_acs_years(cli, tmp_path):
    r = cli('datasets', 'export', 'credit', 'c.parquet', '--rows', '20000', '--pii', '--corrupt', '0.01',
            '--drift', 'income:1.0@2024-07-01', '--bias', '0.1', '--json')
    assert r.code == 0, r.err
    df = pl.read_parquet(tmp_path / 'c.parquet')
    assert {'name', 'email', 'phone', 'card_number'} <= set(df.columns)
    r = cli('datasets', 'export', 'acs', 'a.csv', '--years', '2015', '2016', '--json')
    assert r.code == 0 and r.json()['rows'] == 68_785 + 69_126


def test_export_refuses_to_overwrite(cli, tmp_path):
    (tmp_path / 'x.csv').write_text('precious\n')
    assert_one_line_error(cli('datasets', 'export', 'credit', 'x.csv'), 2, 'already exists')
    assert (tmp_path / 'x.csv').read_text() == 'precious\n'
    assert cli('datasets', 'export', 'credit', 'x.csv', '--rows', '10', '--overwrite').code == 0
    assert pl.read_csv(tmp_path / 'x.csv').height == 10


def test_drift_exit_codes_and_report(cli_in_process, tmp_path):
    cli = cli_in_process
    for name, extra in (('a', []), ('b', ['--seed', '2']), ('c', ['--seed', '3', '--drift', 'income:1.0'])):
        assert cli('datasets', 'export', 'credit', f'{name}.parquet', '--rows', '5000', *extra).code == 0
    same = cli('drift', 'a.parquet', 'b.parquet', '--json')
    assert same.code == 0, same.err
    assert same.json()['skipped_key_columns'] == ['id']
    moved = cli('drift', 'a.parquet', 'c.parquet', '--json', '--report', 'drift.html')
    assert moved.code == 3
    body = moved.json()
    assert body['exit_code'] == 3 and 'income' in body['drifted']
    doc = (tmp_path / 'drift.html').read_text()
    assert doc.startswith('<!DOCTYPE html>') and 'income' in doc and '<script' not in doc
    assert_one_line_error(cli('drift', 'a.parquet', 'missing.parquet'), 2, 'missing.parquet')


def test_drift_report_has_json_twin_and_profiles_compare(cli_in_process, tmp_path):
    cli = cli_in_process
    for name, extra in (('a', []), ('c', ['--seed', '3', '--drift', 'income:1.0'])):
        assert cli('datasets', 'export', 'credit', f'{name}.parquet', '--rows', '5000', *extra).code == 0
    moved = cli('drift', 'a.parquet', 'c.parquet', '--report', 'drift.html', '--json')
    assert moved.code == 3, moved.err
    twin = json.loads((tmp_path / 'drift.json').read_text())
    assert twin['schema_version'] == 2 and 'income' in twin['drifted']
    assert moved.json()['report_json'] == str(tmp_path / 'drift.json')
    for name in ('a', 'c'):
        assert cli('profile', f'{name}.parquet', '--out', f'{name}.bin').code == 0
    prof = cli('drift', 'a.bin', 'c.bin', '--columns', 'income', 'age', '--json')
    assert prof.code == 3, prof.err
    rows = {r['column']: r for r in prof.json()['columns']}
    assert rows['income']['drift'] and not rows['age']['drift'] and rows['income']['sketch_error'] > 0
    assert_one_line_error(cli('drift', 'a.bin', 'c.parquet'), 2, 'profile with a profile')


def test_train_register_promote_rollback_verify_card(cli_in_process, tmp_path):
    cli = cli_in_process
    home = ['--home', str(tmp_path / 'ws')]
    assert cli('init', *home).code == 0
    assert cli('datasets', 'export', 'credit', 'c.parquet', '--rows', '3000').code == 0
    one = cli('train', 'c.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '30',
              '--register', 'credit', '--alias', 'champion', '--json', *home)
    assert one.code == 0, one.err
    assert one.json()['registered']['version'] == 1
    two = cli('train', 'c.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '30', '--seed', '1',
              '--register', 'credit', '--alias', 'challenger', *home)
    assert two.code == 0 and 'version 2 as challenger' in two.out, two.err
    assert cli('models', 'promote', 'credit', '2', '--reason', 'better', *home).code == 0
    back = cli('models', 'rollback', 'credit', '--reason', 'drill', '--json', *home)
    assert back.code == 0 and back.json()['version'] == 1 and 'champion' in back.json()['aliases']
    assert cli('models', 'verify', 'credit', '2', *home).code == 0
    # change one byte of version 2's model file: verify exits 1, promote refuses with a clear one-line error
    art = next((tmp_path / 'ws' / 'models' / 'artifacts').glob('*/artifacts/*/model.json'))
    v2 = cli('models', 'show', 'credit', '2', '--json', *home).json()['run_id']
    art = next((tmp_path / 'ws' / 'models' / 'artifacts').glob(f'{v2}/artifacts/*/model.json'))
    data = art.read_bytes()
    art.write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])
    bad = cli('models', 'verify', 'credit', '2', *home)
    assert bad.code == 1 and "version 2" in bad.out, (bad.out, bad.err)
    bad_p = cli('models', 'promote', 'credit', '2', *home)                            # exit 1: the version failed verification
    assert bad_p.code == 1 and 'version 2' in bad_p.out and 'Traceback' not in bad_p.err, (bad_p.out, bad_p.err)
    assert cli('models', 'show', 'credit', 'champion', '--json', *home).json()['version'] == 1   # champion unchanged
    card = cli('models', 'card', 'credit', '--out', 'card', '--json', *home)
    assert card.code == 0, card.err
    html = (tmp_path / 'card' / Path(card.json()['html']).name).read_text()
    assert 'repaid' in html and '<script' not in html
    assert_one_line_error(cli('models', 'show', 'nope', *home), 2, 'nope')
    audit = cli('audit', 'verify', '--json', *home)
    assert audit.code == 0 and audit.json()['entries'] == 6
    enc = cli('train', 'c.parquet', '--target', 'repaid', '--exclude', 'id', 'timestamp', '--rounds', '10',
              '--register', 'credit_enc', '--encrypt', '--json', *home)
    assert enc.code == 0, enc.err
    run_id = enc.json()['registered']['run_id']
    assert list((tmp_path / 'ws' / 'models' / 'artifacts').glob(f'{run_id}/artifacts/*/model.json.enc'))
    assert not list((tmp_path / 'ws' / 'models' / 'artifacts').glob(f'{run_id}/artifacts/*/model.json'))
    assert cli('models', 'verify', 'credit_enc', '1', *home).code == 0
    rep = cli('models', 'repair', '--older-than', '0', '--reason', 'check after an outage', '--json', *home)
    assert rep.code == 0 and rep.json() == {'removed': [], 'skipped': [], 'dry_run': False, 'reconciled': [], 'differences': []}, rep.err
    assert cli('models', 'repair', *home).code == 2                                   # --reason is required
    assert_one_line_error(cli('models', 'repair', 'nope', '--reason', 'x', *home), 2, 'nope')


@pytest.mark.parametrize('args, contains', [
    (['ingest', 'credit', 'adir'], '`adir` is a directory; expected a .parquet or .csv file to ingest.'),
    (['ingest', 'credit', 'nope.csv'], 'no file at nope.csv; expected a .parquet or .csv file to ingest.'),
    (['ingest', 'credit', 'notes.txt'], "`notes.txt` is not a .parquet or .csv file (suffix '.txt'); expected a .parquet or .csv file to ingest."),
    (['ingest', 'Bad Name', 'a.csv'], 'error: NAME must be a dataset name'),
    (['drift', 'a.csv', 'adir'], '`adir` is a directory; expected a .parquet or .csv file or a dataset name (NAME or NAME@VERSION) to compare.'),
    (['drift', 'a.csv', 'gone.parquet'], 'no file at gone.parquet; expected a .parquet or .csv file or a dataset name (NAME or NAME@VERSION) to compare.'),
    (['contract', 'infer', 'adir', '-o', 'new.yaml'], 'is a directory; expected a .parquet or .csv file or a dataset name (NAME or NAME@VERSION) to infer a contract from.'),
    (['validate', 'adir', '--contract', 'c.yaml'], 'to validate.'),
    (['profile', 'adir', '--out', 'p.bin'], 'to profile.'),
    (['train', 'adir', '--target', 'y'], 'to train on.'),
    (['drift', 'Not A Name', 'a.csv'], '`Not A Name` is neither a .parquet or .csv file nor a dataset name'),
])
def test_errors_speak_the_users_words(cli_in_process, tmp_path, args, contains):
    """A directory is called a directory, the verb is the command's own, and the argument is named as typed."""
    cli = cli_in_process
    assert cli('init', '--home', 'ws').code == 0
    (tmp_path / 'adir').mkdir()
    (tmp_path / 'notes.txt').write_text('x')
    (tmp_path / 'a.csv').write_text('x,y\n1,2\n')
    (tmp_path / 'c.yaml').write_text('name: c\ncolumns: {}\n')
    r = cli(*args, '--home', 'ws')
    assert_one_line_error(r, 2, contains)
    assert 'ingest' not in r.err or args[0] == 'ingest'
    assert 'parameter of' not in r.err


@pytest.mark.parametrize('var, value', [('MLWORK_LOG_LEVEL', 'loud'), ('MLWORK_LOG_FORMAT', 'xml')])
def test_bad_environment_names_the_variable(cli, var, value):
    r = cli('datasets', 'list', env={var: value})
    assert_one_line_error(r, 2, f"{var} must be one of")
    assert repr(value) in r.err and 'setup_logging' not in r.err
    good = 'debug' if var == 'MLWORK_LOG_LEVEL' else 'json'   # any case, as before
    assert cli('datasets', 'list', env={var: good}).code == 0


def test_train_help_example_uses_the_real_target(cli):
    r = cli('train', '--help')
    assert r.code == 0 and '--target employed' in r.out and 'ESR' not in r.out


@pytest.mark.parametrize('early_close', [False, True])
def test_broken_pipe_exits_0_quietly(cli, tmp_path, early_close):
    """`mlwork drift ... --json | head -c 100`: the reader goes away; mlwork exits 0 with nothing on stderr."""
    import subprocess
    import numpy as np
    from conftest import MLWORK, clean_env
    rng = np.random.default_rng(0)
    wide = {f'x{i:03d}': rng.normal(size=300) for i in range(150)}   # JSON far larger than a pipe's buffer
    pl.DataFrame(wide).write_parquet(tmp_path / 'a.parquet')
    pl.DataFrame({k: v + 0.01 for k, v in wide.items()}).write_parquet(tmp_path / 'b.parquet')
    p = subprocess.Popen([str(MLWORK), 'drift', 'a.parquet', 'b.parquet', '--json'], cwd=tmp_path, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if early_close:
        p.stdout.close()                                # the reader is gone before the first byte
    else:
        head = p.stdout.read(100)                       # as `head -c 100`
        assert head.startswith(b'{') and len(head) == 100
        p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 0, err
    assert err == ''


def test_in_process_runner_answers_as_the_executable_and_leaves_logging_as_it_was(cli, cli_in_process, tmp_path, caplog):
    """The in-process runner the heavy tests use gives the executable's exit code and output, and puts the `mlwork`
    logger back (the command installs its own, non-propagating handler), so later tests still see the logs."""
    import logging
    log = logging.getLogger('mlwork')
    before = (list(log.handlers), log.level, log.propagate)
    inside, outside = cli_in_process('init', '--home', 'a', '--json'), cli('init', '--home', 'b', '--json')
    assert inside.code == outside.code == 0 and 'created signing key' in inside.err
    assert inside.json().keys() == outside.json().keys()
    assert (cli_in_process('models', 'show', 'nope', '--home', 'a').code, cli('models', 'show', 'nope', '--home', 'b').code) == (2, 2)
    assert (list(log.handlers), log.level, log.propagate) == before
    caplog.set_level(logging.INFO)
    logging.getLogger('mlwork.anything').info('seen after an in-process call')
    assert 'seen after an in-process call' in caplog.text
