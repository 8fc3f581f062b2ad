"""Import time: ``import stalwart`` next to ``import tenacity``, ``import stamina`` and
``import pybreaker``, each in a fresh interpreter, in one pyperf run.

Each benchmark is the wall time of a whole process (``python -c "import X"``); the
``plain`` row is ``python -c pass``, so the overhead column is the import alone. Two
of stalwart's entry points have rows of their own: ``stalwart.breaker`` (``import
stalwart.breaker``), and ``stalwart.contrib.httpx``, timed as ``import httpx,
stalwart.contrib.httpx`` beside an ``httpx`` row (``import httpx``), so that its
overhead is what stalwart adds to httpx.

Every module is imported from compiled bytecode, as an installed package is: the
script compiles stalwart's tree first, and unsets ``PYTHONDONTWRITEBYTECODE`` for
the timed processes. (An editable install run under ``PYTHONDONTWRITEBYTECODE=1``
has no bytecode cache, compiles every module of stalwart in every process, and
reads several times slower than an install.)

pyperf runs one benchmark after another, so on a busy machine the load differs
between them. The manager process therefore also starts the processes in turn,
interleaved (`ROUNDS` rounds, the order rotated each round), and prints each one's
median and its overhead above the plain process as a ratio to tenacity's: those
ratios hold up under a changing load better than pyperf's.

Run: ``python benchmarks/imports.py --fast``. For a per-module breakdown, run
``python -X importtime -c "import stalwart"``.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyperf

MODULES = {"plain": "pass", **{m: f"import {m}" for m in ("stalwart", "tenacity", "stamina")}}
MODULES["pybreaker"] = "import pybreaker"
MODULES["stalwart.breaker"] = "import stalwart.breaker"
MODULES["httpx"] = "import httpx"
MODULES["stalwart.contrib.httpx"] = "import httpx, stalwart.contrib.httpx"
BASE = {"stalwart.contrib.httpx": "httpx"}
"""Rows whose overhead is above another row's process rather than the plain one."""
ROUNDS = 40  # rounds of the interleaved timing


def cache_bytecode() -> None:
    """Write stalwart's bytecode caches, as the peers' installs have theirs.

    An editable install of a tree edited under ``PYTHONDONTWRITEBYTECODE`` would
    otherwise compile stalwart's changed modules in every timed process.
    """
    import stalwart

    compileall.compile_dir(str(Path(stalwart.__file__).parent), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def interleaved() -> dict[str, float]:
    """Median ms per process of each module, started one each in turn, `ROUNDS` rounds."""
    names = list(MODULES)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", MODULES[name]], check=True)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    cache_bytecode()
    runner = pyperf.Runner()
    runner.metadata["description"] = "import time in a fresh interpreter"
    args = runner.parse_args()
    for name, code in MODULES.items():
        runner.bench_command(f"import-time-{name}", [sys.executable, "-c", code])
    if not args.worker:
        medians = interleaved()
        base = medians["tenacity"] - medians["plain"]
        print(f"Interleaved, {ROUNDS} rounds: median ms per process, overhead above plain")
        print("(ratio of the overhead to tenacity's; stalwart.contrib.httpx above httpx):")
        for name, median in medians.items():
            overhead = median - medians[BASE.get(name, "plain")]
            print(f"  {name:<24} {median:>7.1f} ms  {overhead:>7.1f} ms  ({overhead / base:.2f})")


if __name__ == "__main__":
    main()
