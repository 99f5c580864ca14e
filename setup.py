"""Packaging for mlwork (nbdev 2 layout). All settings live in settings.ini; edit there, not here."""
import shlex
from configparser import ConfigParser

import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + 'lib_name user branch license status min_python audience language'.split()
for o in expected:
    assert o in cfg, f'missing expected setting in settings.ini: {o}'
setup_cfg = {o: cfg[o] for o in cfg_keys}

# settings.ini's nbdev licence names as SPDX expressions (setuptools deprecates licence classifiers).
licenses = {'apache2': 'Apache-2.0', 'mit': 'MIT', 'bsd3': 'BSD-3-Clause'}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
# nbdev 2's template stops at 3.10; mlwork supports 3.11 and 3.12 (whylogs ships wheels up to 3.12).
py_versions = '3.11 3.12'.split()

def reqs(key: str) -> list[str]:
    return shlex.split(cfg.get(key, '') or '')

min_python = cfg['min_python']
lic = licenses.get(cfg['license'].lower(), cfg['license'])

setuptools.setup(
    name=cfg['lib_name'],
    license=lic,
    license_files=['LICENSE'],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    # namespace discovery so the data and template folders are packaged as package data
    packages=setuptools.find_namespace_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    package_data={cfg['lib_path']: ['resources/*', 'resources/*/*', 'templates/*', 'pipelines/notebooks/*.ipynb']},
    install_requires=reqs('requirements'),
    extras_require={
        'dev': reqs('dev_requirements'),
        'dask': reqs('dask_requirements'),
        'gpu': reqs('gpu_requirements'),
        'alibi': reqs('alibi_requirements'),
    },
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **setup_cfg,
)
