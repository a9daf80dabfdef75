"""Helpers the benchmarks share: timing, and the command line's `--quick` mode."""

from __future__ import annotations

import argparse
import time


def best_of(fn, rounds: int = 7, calls: int = 30) -> float:
    """Seconds per call of `fn`, the best of `rounds` rounds of `calls` calls (after one call to warm up):
    the least disturbed measure on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def parse_args(parser: argparse.ArgumentParser, quick: dict, also: str = "") -> argparse.Namespace:
    """The command line, `--quick` added: it sets the defaults in `quick` (options given beside it still win).

    A quick run is a check that the benchmark works (`tests/test_bench.py` runs every script so): a few
    seconds, its result lines printed in the same format, their numbers meaningless. `also` says what
    else the script does in quick mode (it reads `args.quick` itself for that).
    """
    options = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in quick.items())
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a check in a few seconds, not a measure: {options}{'; ' + also if also else ''}",
    )
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args()
    return args
