"""One contract for every detector and estimator, checked the same way for each (river's `yield_checks`,
scikit-learn's `check_estimator`).

Each class gets a `Spec`: how to build it with small, fast parameters, tiny seeded data to fit on and to use
it on, and the method that uses the fit. Each check is a plain function of a spec that raises
`AssertionError` when the contract is broken:

a) `__init__` stores every parameter as given (the very object) and checks none of them;
b) `fit` returns the estimator;
c) `fit` (and using the fit) adds public attributes that end in `_` only, and leaves the parameters alone;
d) using it before `fit` raises `NotFittedError` with mlwork's sentence naming the class;
e) `_parameter_constraints` declares every `__init__` parameter, and every value `invalid_values` generates
   for a rule makes `fit` raise `InvalidParameter` with exactly the standard sentence;
f) `copy.deepcopy` and a pickle round trip of a fitted estimator give identical results;
g) two estimators built with the same parameters (the same seed) and fitted on the same data give identical
   results, and using one twice gives the same result twice;
h) the result follows the Result protocol (`mlwork.checks.check_result`).

`test_checks_bite` shows that each check fails on a deliberately broken subclass, and
`test_every_estimator_has_a_spec` that a new class with a `fit` method cannot go unchecked.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import importlib.util
import inspect
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlwork.checks import Interval, check_result, describe, invalid_values
from mlwork.core import InvalidParameter, NotFittedError, param_error
from mlwork.drift.alibi import AlibiDetector
from mlwork.drift.estimate import CBPE
from mlwork.drift.multivariate import DomainClassifierDrift, MMDDrift
from mlwork.drift.univariate import DriftDetector
from mlwork.models.train import LGBMTrainer
from mlwork.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


# --- specs: how to build, fit and use each class ----------------------------------------------------

@dataclass(frozen=True)
class Spec:
    "How the conformance checks build, fit and use one class."
    name: str  # Test id
    cls: type  # The estimator class
    params: dict[str, Any]  # Small, fast parameters (keyword arguments of the constructor)
    fit_data: Callable[[], tuple]  # Positional arguments of `fit` (fresh or cached, never mutated)
    use: str  # The method that uses the fit: 'score', 'estimate', 'predict'
    use_data: Callable[[], tuple]  # Positional arguments of that method
    how: str = 'fit(reference)'  # The call the not-fitted message asks for
    result: Callable[[Any, Any], Any] = field(default=lambda est, out: out)  # The Result object: from (estimator, output)

    def build(self, **overrides: Any) -> Any:
        return self.cls(**{**self.params, **overrides})

    def fitted(self, **overrides: Any) -> Any:
        return self.build(**overrides).fit(*self.fit_data())

    def run(self, est: Any) -> Any:
        return getattr(est, self.use)(*self.use_data())


@functools.cache
def _credit(seed: int, n: int) -> pl.DataFrame:
    return generate('credit', n_rows=n, seed=seed).frame


FEATURES = ['age', 'income', 'debt_ratio', 'credit_history_months', 'n_open_accounts', 'loan_amount', 'loan_purpose',
            'employment', 'region']


def _reference() -> pl.DataFrame:
    return _credit(1, 300).select(FEATURES)


def _current() -> pl.DataFrame:
    return _credit(2, 200).select(FEATURES)


@functools.cache
def _scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    s = rng.random(500)
    return s, (rng.random(500) < s).astype(int)


class KSStandIn:
    "alibi-detect's KSDrift contract (built on the reference matrix, batch `predict`), computed with scipy."

    def __init__(self, x_ref: np.ndarray, p_val: float = 0.05):
        self.x_ref, self.p_val, self.correction, self.n_features = x_ref, p_val, 'bonferroni', x_ref.shape[1]

    def predict(self, x: np.ndarray, drift_type: str = 'batch', return_p_val: bool = True,
                return_distance: bool = True) -> dict[str, Any]:
        res = [stats.ks_2samp(self.x_ref[:, j], x[:, j]) for j in range(x.shape[1])]
        p = np.array([r.pvalue for r in res])
        thr = self.p_val / self.n_features
        return {'data': {'is_drift': int((p < thr).any()), 'p_val': p, 'threshold': thr,
                         'distance': np.array([r.statistic for r in res])}, 'meta': {}}


SPECS = [
    Spec('DriftDetector', DriftDetector, {'n_calibration': 50, 'seed': 3, 'n_threads': 1},
         lambda: (_reference(),), 'score', lambda: (_current(),)),
    Spec('DomainClassifierDrift', DomainClassifierDrift, {'n_folds': 3, 'num_boost_round': 10, 'seed': 1, 'max_rows': 200},
         lambda: (_reference(),), 'score', lambda: (_current(),)),
    Spec('MMDDrift', MMDDrift, {'n_permutations': 30, 'max_rows': 150, 'seed': 2, 'n_jobs': 1},
         lambda: (_reference(),), 'score', lambda: (_current(),)),
    Spec('CBPE', CBPE, {'n_chunks': 5, 'n_folds': 3, 'n_calibration_draws': 3, 'chunk_size': 100, 'seed': 4},
         lambda: (_scores()[0][:300], _scores()[1][:300]), 'estimate', lambda: (_scores()[0][300:],),
         how='fit(reference_scores, reference_labels)'),
    Spec('AlibiDetector[stand-in]', AlibiDetector, {'detector': KSStandIn, 'columns': ['age', 'income', 'debt_ratio'],
                                                    'p_val': 0.05},
         lambda: (_reference(),), 'score', lambda: (_current(),)),
    Spec('AlibiDetector[TabularDrift]', AlibiDetector, {'detector': 'TabularDrift', 'p_val': 0.05},
         lambda: (_reference(),), 'score', lambda: (_current(),)),
    Spec('LGBMTrainer', LGBMTrainer, {'task': 'binary', 'num_boost_round': 10, 'early_stopping_rounds': None, 'seed': 5,
                                      'num_threads': 1},
         lambda: (_credit(1, 300), 'repaid', FEATURES), 'predict', lambda: (_current(),),
         how='fit(data, target)', result=lambda est, out: est.model_),
]

ALIBI = importlib.util.find_spec('alibi_detect') is not None
SPEC_PARAMS = [pytest.param(s, id=s.name, marks=pytest.mark.skipif(
    s.name == 'AlibiDetector[TabularDrift]' and not ALIBI,
    reason='alibi-detect is not installed here (optional, BSL 1.1); AlibiDetector[stand-in] checks the adapter'))
    for s in SPECS]


# --- the checks ---------------------------------------------------------------------------------------

def _init_parameters(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls).parameters.values())


def _fingerprint(out: Any) -> str:
    "A text that is equal exactly when two outputs are (NaN equal to NaN)."
    if isinstance(out, np.ndarray):
        return f'{out.dtype}{out.shape}{out.tobytes().hex()}'
    if hasattr(out, 'to_dict'):
        return json.dumps(out.to_dict(), sort_keys=True, default=repr)
    return repr(out)


def check_init_stores_params(spec: Spec) -> None:
    "a) `__init__` keeps each parameter as the very object passed (and its defaults as declared), checking nothing."
    name = spec.cls.__name__
    passed: dict[str, Any] = {}
    for p in _init_parameters(spec.cls):
        assert p.kind is not p.VAR_POSITIONAL, f'{name}.__init__ takes *{p.name}: parameters must have names'
        passed['extra_option' if p.kind is p.VAR_KEYWORD else p.name] = object()
    try:
        est = spec.cls(**passed)
    except Exception as e:
        raise AssertionError(f'{name}.__init__ must store its parameters and leave checking to fit; it raised {e!r}') from e
    defaults = spec.cls()
    for p in _init_parameters(spec.cls):
        got, default = getattr(est, p.name, None), getattr(defaults, p.name, None)
        if p.kind is p.VAR_KEYWORD:
            assert isinstance(got, dict) and got.get('extra_option') is passed['extra_option'], f'{name}.{p.name}: {got!r}'
            assert default == {}, f'{name}.{p.name} without keyword arguments is {default!r}, not {{}}'
        else:
            assert got is passed[p.name], f'{name}.{p.name} is not the object passed to __init__ (got {got!r})'
            assert default is p.default, f'{name}.{p.name} defaults to {p.default!r} but __init__ stored {default!r}'
    est = spec.build()
    var_kw = [p.name for p in _init_parameters(spec.cls) if p.kind is p.VAR_KEYWORD]
    for k, v in spec.params.items():
        got = getattr(est, k) if hasattr(est, k) else getattr(est, var_kw[0])[k]
        assert got is v, f'{name}: parameter {k!r} was stored as {got!r}, not the {v!r} passed'


def check_fit_returns_self(spec: Spec) -> None:
    "b) `fit` returns the estimator itself."
    est = spec.build()
    out = est.fit(*spec.fit_data())
    assert out is est, f'{spec.cls.__name__}.fit returned {out!r} instead of the estimator'


def check_fitted_attributes(spec: Spec) -> None:
    "c) fit (and use) add public attributes ending in `_` only, at least one, and leave the parameters as they were."
    name = spec.cls.__name__
    est = spec.build()
    before = dict(vars(est))
    est.fit(*spec.fit_data())
    fitted = [a for a in set(vars(est)) - set(before) if not a.startswith('_')]
    assert fitted, f'{name}.fit set no fitted attribute'
    spec.run(est)
    added = [a for a in set(vars(est)) - set(before) if not a.startswith('_')]
    bad = sorted(a for a in added if not a.endswith('_'))
    assert not bad, f'{name}: attributes set by fit or {spec.use} must end in `_`: {bad}'
    changed = sorted(k for k, v in before.items() if vars(est).get(k) is not v)
    assert not changed, f'{name}: fit changed its parameters {changed}'


def check_not_fitted(spec: Spec) -> None:
    "d) using the estimator before `fit` raises `NotFittedError` saying which class and what to call."
    name = spec.cls.__name__
    est = spec.build()
    try:
        spec.run(est)
    except NotFittedError as e:
        expected = f'This {name} is not fitted yet: call `{spec.how}` first.'
        assert str(e) == expected, f'{name}.{spec.use} before fit said {str(e)!r}, not {expected!r}'
    except Exception as e:
        raise AssertionError(f'{name}.{spec.use} before fit must raise NotFittedError; it raised {e!r}') from e
    else:
        raise AssertionError(f'{name}.{spec.use} before fit did not raise')


def check_parameter_constraints(spec: Spec) -> None:
    "e) every parameter is declared, and each declared rule refuses its invalid values in `fit` with the standard sentence."
    name = spec.cls.__name__
    constraints = getattr(spec.cls, '_parameter_constraints', None)
    assert isinstance(constraints, dict), f'{name} declares no _parameter_constraints'
    params = {p.name: p for p in _init_parameters(spec.cls)}
    missing, extra = sorted(set(params) - set(constraints)), sorted(set(constraints) - set(params))
    assert not missing, f'{name}._parameter_constraints does not declare {missing}'
    assert not extra, f'{name}._parameter_constraints declares {extra}, which __init__ does not take'
    for pname, rules in constraints.items():
        for bad in invalid_values(rules):
            if params[pname].kind is params[pname].VAR_KEYWORD:
                est = spec.build()
                setattr(est, pname, bad)
            else:
                est = spec.build(**{pname: bad})
            expected = str(param_error(pname, describe(rules), bad, owner=name))
            try:
                est.fit(*spec.fit_data())
            except InvalidParameter as e:
                assert str(e) == expected, f'{name}({pname}={bad!r}).fit said {str(e)!r}, not {expected!r}'
            except Exception as e:
                raise AssertionError(f'{name}({pname}={bad!r}).fit must raise InvalidParameter; it raised {e!r}') from e
            else:
                raise AssertionError(f'{name}.fit accepted {pname}={bad!r}, which its constraints {rules} refuse')


def check_copy_and_pickle(spec: Spec) -> None:
    "f) a deep copy and a pickle round trip of a fitted estimator give identical results, before and after use."
    name = spec.cls.__name__
    est = spec.fitted()
    try:
        copies = [copy.deepcopy(est), pickle.loads(pickle.dumps(est))]
        want = _fingerprint(spec.run(est))
        copies += [copy.deepcopy(est), pickle.loads(pickle.dumps(est))]
    except Exception as e:
        raise AssertionError(f'a fitted {name} must survive copy.deepcopy and pickle; {e!r}') from e
    for i, c in enumerate(copies):
        assert _fingerprint(spec.run(c)) == want, f'{name}: copy {i} ({"deepcopy" if i % 2 == 0 else "pickle"}) gives another result'


def check_seed_reproduces(spec: Spec) -> None:
    "g) the same parameters (seed included) and data give identical results; using it twice gives the same twice."
    name = spec.cls.__name__
    a, b = spec.fitted(), spec.fitted()
    first = _fingerprint(spec.run(a))
    assert _fingerprint(spec.run(b)) == first, f'two {name}s with the same seed give different results'
    assert _fingerprint(spec.run(a)) == first, f'{name}.{spec.use} twice gives different results'


def check_result_protocol(spec: Spec) -> None:
    "h) the result renders itself: `to_dict()` JSON-ready, `_repr_html_()`, and a `str()` of its own."
    est = spec.fitted()
    result = spec.result(est, spec.run(est))
    try:
        check_result(result)
    except TypeError as e:
        raise AssertionError(f'{spec.cls.__name__}: {e}') from e


CHECKS = [check_init_stores_params, check_fit_returns_self, check_fitted_attributes, check_not_fitted,
          check_parameter_constraints, check_copy_and_pickle, check_seed_reproduces, check_result_protocol]


@pytest.mark.parametrize('check', CHECKS, ids=lambda c: c.__name__.removeprefix('check_'))
@pytest.mark.parametrize('spec', SPEC_PARAMS)
def test_conformance(spec: Spec, check: Callable[[Spec], None]) -> None:
    check(spec)


# --- every class with a fit method has a spec ---------------------------------------------------------

def _classes_with_fit() -> set[str]:
    "Names of the classes in the package source that define a public `fit` method."
    found = set()
    for path in (ROOT / 'mlwork').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith('_') and any(
                    isinstance(f, ast.FunctionDef) and f.name == 'fit' for f in node.body):
                found.add(node.name)
    return found


def test_every_estimator_has_a_spec():
    assert _classes_with_fit() == {s.cls.__name__ for s in SPECS}


# --- the checks bite: each fails on a class that breaks its part of the contract ------------------------

MMD = next(s for s in SPECS if s.cls is MMDDrift)


class FitReturnsNone(MMDDrift):
    def fit(self, reference, columns=None):
        super().fit(reference, columns)


class InitFillsDefault(MMDDrift):
    @functools.wraps(MMDDrift.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_rows = self.block_rows or 2048  # stores a value that was not passed


class InitConverts(MMDDrift):
    @functools.wraps(MMDDrift.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = float(self.alpha)  # validates (and fails on anything but a number) in __init__


class FitSkipsSeedRule(MMDDrift):
    "Declares the seed's rule but fit does not enforce it."
    def fit(self, reference, columns=None):
        declared = type(self)._parameter_constraints
        self._parameter_constraints = {k: v for k, v in declared.items() if k != 'seed'}
        try:
            return super().fit(reference, columns)
        finally:
            del self._parameter_constraints


class HandWrittenMessage(MMDDrift):
    def fit(self, reference, columns=None):
        if not Interval(float, 0, 1, closed='neither').accepts(self.alpha):
            msg = f'alpha must be between 0 and 1, got {self.alpha}'
            raise InvalidParameter(msg)
        return super().fit(reference, columns)


class UndeclaredParameter(MMDDrift):
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {k: v for k, v in MMDDrift._parameter_constraints.items() if k != 'n_jobs'}


class PublicFittedName(MMDDrift):
    def fit(self, reference, columns=None):
        super().fit(reference, columns)
        self.bandwidth = self.bandwidth_  # a fitted attribute without the trailing underscore
        return self


class NoFitCheck(MMDDrift):
    def score(self, current):
        if not hasattr(self, 'reference_'):
            msg = 'fit first'
            raise RuntimeError(msg)
        return super().score(current)


class Unpicklable(MMDDrift):
    def fit(self, reference, columns=None):
        super().fit(reference, columns)
        self.rows_ = (r for r in range(3))  # a generator: neither copies nor pickles
        return self


class Unseeded(MMDDrift):
    def score(self, current):
        r = super().score(current)
        return dataclasses.replace(r, statistic=r.statistic + np.random.default_rng().random())


class DictOnly:
    "A result with to_dict() but no _repr_html_()."
    def __init__(self, r):
        self.r = r

    def to_dict(self):
        return self.r.to_dict()


class NoHtmlResult(MMDDrift):
    def score(self, current):
        return DictOnly(super().score(current))


BROKEN = [  # (class, the check that must fail on it, what its message must say)
    (FitReturnsNone, check_fit_returns_self, 'fit returned None instead of the estimator'),
    (InitFillsDefault, check_init_stores_params, 'block_rows defaults to None but __init__ stored 2048'),
    (InitConverts, check_init_stores_params, 'must store its parameters and leave checking to fit'),
    (FitSkipsSeedRule, check_parameter_constraints, 'fit accepted seed=.* which its constraints .* refuse'),
    (HandWrittenMessage, check_parameter_constraints, "said 'alpha must be between 0 and 1.*, not \"The 'alpha' parameter"),
    (UndeclaredParameter, check_parameter_constraints, r"_parameter_constraints does not declare \['n_jobs'\]"),
    (PublicFittedName, check_fitted_attributes, r"must end in `_`: \['bandwidth'\]"),
    (NoFitCheck, check_not_fitted, 'must raise NotFittedError; it raised RuntimeError'),
    (Unpicklable, check_copy_and_pickle, "must survive copy.deepcopy and pickle; TypeError.*generator"),
    (Unseeded, check_seed_reproduces, 'with the same seed give different results'),
    (NoHtmlResult, check_result_protocol, r'DictOnly must have to_dict\(\) and _repr_html_\(\)'),
]


@pytest.mark.parametrize('broken, check, says', BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_checks_bite(broken: type, check: Callable[[Spec], None], says: str) -> None:
    "Each broken subclass of MMDDrift fails its check, for the reason it was broken."
    spec = dataclasses.replace(MMD, name=broken.__name__, cls=broken)
    with pytest.raises(AssertionError, match=says):
        check(spec)


def test_checks_pass_on_the_unbroken_class() -> None:
    "The same checks, on MMDDrift itself, pass: the failures above come from the breaks."
    for check in CHECKS:
        check(MMD)
