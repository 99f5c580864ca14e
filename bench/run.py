"""Run a benchmark against its peer and print a markdown table.

    python bench/run.py --list
    python bench/run.py synthetic --repeat 5 --rows 10000000
    python bench/run.py synthetic --only credit,pii --repeat 3

Results are written as JSON under bench/results/ (not committed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, discover, markdown, run_benchmark  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text.replace('_', ''))
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive int, got {text}')
    return value


def main(argv: list[str] | None = None) -> int:
    benchmarks = discover()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='\n'.join(__doc__.splitlines()[2:]))
    ap.add_argument('name', nargs='?', help='benchmark to run (see --list)')
    ap.add_argument('--list', action='store_true', help='list the benchmarks and their cases, then exit')
    ap.add_argument('--repeat', type=positive_int, default=5, help='timed runs per side (default 5)')
    ap.add_argument('--warmup', type=int, default=1, help='untimed runs first (default 1)')
    ap.add_argument('--rows', type=positive_int, help="rows for mlwork's side (default: the benchmark's)")
    ap.add_argument('--peer-rows', type=positive_int, help="rows for slow peers (default: the benchmark's)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--only', help='comma-separated case labels to run')
    ap.add_argument('--out', type=Path, default=RESULTS_DIR, help='folder for the JSON results')
    args = ap.parse_args(argv)
    if args.list or not args.name:
        for name, module in benchmarks.items():
            labels = ', '.join(c.label for c in module.cases(module.DEFAULT_ROWS, module.DEFAULT_PEER_ROWS, 0))
            print(f'{name:12s} {module.DESCRIPTION}\n{"":12s} cases: {labels}')
        return 0 if args.list else 2
    if args.name not in benchmarks:
        print(f"unknown benchmark {args.name!r}; known: {', '.join(benchmarks)} (see --list)", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(',')] if args.only else None
    result, path = run_benchmark(benchmarks[args.name], repeat=args.repeat, warmup=max(args.warmup, 0), rows=args.rows,
                                 peer_rows=args.peer_rows, seed=args.seed, only=only, out_dir=args.out,
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(result))
    print(f'\nresults: {path}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
