"""Evidently's whole command, as a user would run it: read two Parquet files, DataDriftPreset with its defaults,
save the HTML report. Run by the peers' venv (see requirements.txt).

    python evidently_drift_script.py REFERENCE.parquet CURRENT.parquet REPORT.html
"""
import sys

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main(ref_path: str, cur_path: str, html: str) -> int:
    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    snapshot.save_html(html)
    print(f'report: {html}')
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:4]))
