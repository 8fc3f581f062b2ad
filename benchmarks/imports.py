"""Import time: ``import stalwart`` next to ``import tenacity``, ``import stamina`` and
``import pybreaker``, each in a fresh interpreter, in one pyperf run.

Each benchmark is the wall time of a whole process (``python -c "import X"``); the
``plain`` row is ``python -c pass``, so the overhead column is the import alone.

Run: ``python benchmarks/imports.py --fast``. For a per-module breakdown, run
``python -X importtime -c "import stalwart"``.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

import pyperf

MODULES = {"plain": "pass", **{m: f"import {m}" for m in ("stalwart", "tenacity", "stamina")}}
MODULES["pybreaker"] = "import pybreaker"


def cache_bytecode() -> None:
    """Write stalwart's bytecode caches, as the peers' installs have theirs.

    An editable install of a tree edited under ``PYTHONDONTWRITEBYTECODE`` would
    otherwise compile stalwart's changed modules in every timed process.
    """
    import stalwart

    compileall.compile_dir(str(Path(stalwart.__file__).parent), quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def main() -> None:
    cache_bytecode()
    runner = pyperf.Runner()
    runner.metadata["description"] = "import time in a fresh interpreter"
    for name, code in MODULES.items():
        runner.bench_command(f"import-time-{name}", [sys.executable, "-c", code])


if __name__ == "__main__":
    main()
