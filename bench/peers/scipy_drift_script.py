"""The plain scipy script a user would write instead of `mlwork drift`: read two Parquet files, KS per numeric
column, chi-squared per categorical one, Bonferroni across columns, print the drifted columns.

    python scipy_drift_script.py REFERENCE.parquet CURRENT.parquet

Exit code 1 when a column drifted (as `mlwork drift` signals a finding), 0 otherwise.
"""
import sys

import numpy as np
import polars as pl
from scipy import stats

ALPHA = 0.05


def main(ref_path: str, cur_path: str) -> int:
    ref, cur = pl.read_parquet(ref_path), pl.read_parquet(cur_path)
    pvalues = {}
    for name in ref.columns:
        if ref.schema[name].is_numeric():
            pvalues[name] = stats.ks_2samp(ref[name].drop_nulls().to_numpy(), cur[name].drop_nulls().to_numpy()).pvalue
        else:
            a = dict(ref[name].value_counts().iter_rows())
            b = dict(cur[name].value_counts().iter_rows())
            cats = sorted(set(a) | set(b), key=str)
            table = np.array([[a.get(k, 0) for k in cats], [b.get(k, 0) for k in cats]])
            pvalues[name] = stats.chi2_contingency(table, correction=False).pvalue
    drifted = [n for n, p in pvalues.items() if p < ALPHA / len(pvalues)]
    for name, p in pvalues.items():
        print(f"{'DRIFT' if name in drifted else 'ok':<5} {name:<12} p={p:.3g}")
    print(f'{len(drifted)} of {len(pvalues)} columns drifted: {drifted}')
    return 1 if drifted else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], sys.argv[2]))
