"""Run every example in this directory, one after the other, and report the outcome.

This is what ``make demo`` runs. Each example runs in its own process, with the same
interpreter as this script; the run fails (exit status 1) if any example fails.
The HTTP showcase runs last: it takes about 25 s, the others a few seconds together.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIME_LIMIT = 60.0  # seconds per example; each should take a few at most, the showcase ~25
LAST = "http_showcase.py"  # the finale: a plain and a stalwart httpx client, side by side


def examples() -> list[Path]:
    paths = (path for path in HERE.glob("*.py") if path.name != Path(__file__).name)
    return sorted(paths, key=lambda path: (path.name == LAST, path.name))


def run(path: Path) -> bool:
    print(f"\n{'=' * 78}\n{path.name}\n{'=' * 78}", flush=True)
    started = time.perf_counter()
    try:
        # The command is this interpreter and a file from this directory: nothing untrusted.
        completed = subprocess.run(  # noqa: S603
            [sys.executable, str(path)], check=False, timeout=TIME_LIMIT
        )
    except subprocess.TimeoutExpired:
        print(f"--- {path.name}: FAILED, still running after {TIME_LIMIT:.0f} s", flush=True)
        return False
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        print(f"--- {path.name}: FAILED with exit status {completed.returncode}", flush=True)
        return False
    print(f"--- {path.name}: ok in {elapsed:.2f} s", flush=True)
    return True


def main() -> int:
    paths = examples()
    print(f"Running {len(paths)} examples with {sys.executable}", flush=True)
    started = time.perf_counter()
    failed = [path.name for path in paths if not run(path)]
    elapsed = time.perf_counter() - started
    print()
    if failed:
        names = ", ".join(failed)
        print(f"{len(failed)} of {len(paths)} examples failed in {elapsed:.1f} s: {names}")
        return 1
    print(f"All {len(paths)} examples passed in {elapsed:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
