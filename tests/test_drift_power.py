"""The detectable drift the drift module claims (mlwork.drift.power.min_detectable_drift) is really detected, and no drift stays quiet."""
import numpy as np
import pytest
from scipy import stats

from mlwork.drift.power import detection_power, min_detectable_drift
from mlwork.drift.univariate import DriftDetector


def _at_least(reps, p, q=0.001):
    "Smallest count of detections compatible with a rate of at least p in reps trials (one-sided, 0.1 % level)."
    return int(stats.binom.ppf(q, reps, p))


@pytest.mark.parametrize('n,kind', [(1_000, 'numeric'), (1_000, 'categorical'), (20_000, 'numeric'), (20_000, 'categorical')])
def test_claimed_detectable_shift_is_detected_80_percent(n, kind):
    claimed = min_detectable_drift(n, power=0.8, kind=kind, reps=60, seed=1)
    assert np.isfinite(claimed)
    reps = 100
    hits = round(detection_power(n, claimed, kind=kind, reps=reps, seed=99) * reps)  # fresh draws
    print(f'n={n} {kind}: claimed {claimed}, detected {hits}/{reps}')
    assert hits >= _at_least(reps, 0.8)
    if n >= 10_000:  # no floor at large n: shifts under the default bars (0.08 sd, 0.04 TV) are detected as changed
        below = detection_power(n, 0.08 if kind == 'numeric' else 0.04, kind=kind, reps=40, seed=7)
        assert below >= 0.9, below
        assert detection_power(n, 0.08 if kind == 'numeric' else 0.04, kind=kind, reps=20, seed=7, outcome='material') <= 0.1


@pytest.mark.parametrize('kind', ['numeric', 'categorical'])
def test_no_drift_is_flagged_at_most_alpha(kind):
    reps = 200
    rate = detection_power(1_000, 0.0, kind=kind, reps=reps, n_columns=1, seed=3)
    print(f'{kind}: no-drift flag rate {rate:.3f} over {reps}')
    assert rate * reps <= stats.binom.ppf(0.999, reps, 0.05)


def test_bad_input():
    with pytest.raises(Exception, match="'kind' parameter"):
        detection_power(100, 0.1, kind='text')
    with pytest.raises(Exception, match="'shift' parameter"):
        detection_power(100, 0.9, kind='categorical')
