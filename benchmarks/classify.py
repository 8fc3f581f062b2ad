"""What classification costs: the default classifier now against an earlier version.

Times ``classify(exc)`` for three exceptions: one no rule knows (``RuntimeError``, the
case every unknown failure pays), a built-in ``ConnectionError``, and a recognised
library exception (redis-py's ``ConnectionError``; a class of the same module and name
when redis is not installed, which the classifier cannot tell apart). The earlier
``stalwart/classify.py`` (one module then, a package now) is read from git
(``--baseline``, by default the last commit before the library table) and loaded beside
the current one, so both run in one process, interleaved (earlier, current, earlier,
...), and the table gives the best time of each and their ratio (below 1: the current
classifier is faster).

It also measures the import: ``python -X importtime -c "import stalwart.classify"``
in fresh interpreters with compiled bytecode, the earlier tree (``git archive``) and
the current one started in turn, and gives the median self time of the classification
modules and the cumulative time of ``import stalwart``.

Run: ``python benchmarks/classify.py --fast``; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import compileall
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write_section

import stalwart
import stalwart.classify

BASELINE = "2454e5f77c4b9664d812b154b1a2f94b09f8bd4e"
"""The last commit whose classifier had no library table."""
ROOT = Path(__file__).resolve().parent.parent
CALLS = 20_000
"""Calls per timed run."""
CLASSIFY_MODULES = ("stalwart.classify", "stalwart._known_errors")
"""The classification modules of the earlier tree; today's are the package
``stalwart.classify`` and its submodules (see `is_classify_module`)."""


def is_classify_module(name: str) -> bool:
    """Whether `name` is a classification module, in either tree."""
    return name in CLASSIFY_MODULES or name.startswith("stalwart.classify.")


def section_args() -> Any:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="write the section there")
    parser.add_argument("--baseline", default=BASELINE, help="the git revision to compare with")
    return parser.parse_args()


def git_archive(revision: str, path: str) -> bytes | None:
    """The tar archive of `path` at `revision`, or None outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, path],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def load_baseline(revision: str, into: Path) -> Any:
    """The earlier classify module, loaded under another name beside the current one.

    Its relative imports (errors, validation) resolve to the current package, which
    the classifier only uses for its markers and helpers.
    """
    archive = git_archive(revision, "src/stalwart/classify.py")
    if archive is None:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    source = into / "src" / "stalwart" / "classify.py"
    name = "stalwart._classify_baseline"
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "stalwart"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def subjects() -> tuple[dict[str, BaseException], str]:
    """The exceptions to classify, and where the library one comes from."""
    try:
        import redis.exceptions

        library: BaseException = redis.exceptions.ConnectionError("refused")
        origin = "redis-py"
    except ImportError:
        lookalike = type("ConnectionError", (Exception,), {"__module__": "redis.exceptions"})
        library = lookalike("refused")
        origin = "a class named redis.exceptions.ConnectionError"
    return (
        {
            "unknown (RuntimeError)": RuntimeError("odd"),
            "built-in ConnectionError": ConnectionError("reset"),
            "redis ConnectionError": library,
        },
        origin,
    )


def _ns(classify: Any, exc: BaseException) -> float:
    """Nanoseconds per call of one run of `CALLS` calls."""
    t0 = time.perf_counter()
    for _ in range(CALLS):
        classify(exc)
    return (time.perf_counter() - t0) / CALLS * 1e9


def per_call(baseline: Any, rounds: int) -> dict[str, dict[str, float]]:
    """Best ns per call, earlier and current interleaved, and their ratio."""
    cases, _ = subjects()
    results: dict[str, dict[str, float]] = {}
    for name, exc in cases.items():
        current = stalwart.classify.classify
        after: list[float] = []
        before: list[float] = []
        for round_ in range(rounds):
            order = [(after, current)]
            if baseline is not None:
                order.append((before, baseline.classify))
            if round_ % 2:
                order.reverse()
            for values, fn in order:
                values.append(_ns(fn, exc))
        row = {"after_ns": min(after)}
        if before:
            row["before_ns"] = min(before)
            row["ratio"] = min(after) / min(before)
        results[name] = row
    return results


def _import_times(pythonpath: str) -> tuple[float, float]:
    """Self µs of the classification modules and cumulative µs of ``stalwart``."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import stalwart.classify"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    own = total = 0.0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = [field.strip() for field in line.removeprefix("import time:").split("|")]
        if not fields[0].isdigit():
            continue  # the header
        if is_classify_module(fields[2]):
            own += float(fields[0])
        if fields[2] == "stalwart":
            total = float(fields[1])
    return own, total


def import_cost(revision: str, rounds: int, scratch: Path) -> dict[str, float] | None:
    """Median import figures of the earlier tree and the current one, interleaved."""
    archive = git_archive(revision, "src/stalwart")
    if archive is None:
        return None
    old = scratch / "old"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(old, filter="data")
    trees = {"before": str(old / "src"), "after": str(Path(stalwart.__file__).parent.parent)}
    for tree in trees.values():
        compileall.compile_dir(str(Path(tree) / "stalwart"), quiet=1)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for round_ in range(rounds):
        names = list(trees) if round_ % 2 else list(reversed(trees))
        for name in names:
            figures[name].append(_import_times(trees[name]))
    result: dict[str, float] = {}
    for name, values in figures.items():
        result[f"{name}_classify_self_us"] = statistics.median(v[0] for v in values)
        result[f"{name}_stalwart_cumulative_us"] = statistics.median(v[1] for v in values)
    return result


def main() -> None:
    args = section_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline(args.baseline, Path(tmp) / "module")
        calls = per_call(baseline, 5 if args.fast else 21)
        imports = import_cost(args.baseline, 7 if args.fast else 31, Path(tmp))
    _, origin = subjects()
    results: dict[str, Any] = {
        "baseline": args.baseline,
        "library_exception": origin,
        "per_call": calls,
        "import": imports,
    }
    if baseline is None:
        rows = [f"| {name} | | {r['after_ns']:.0f} | |" for name, r in calls.items()]
    else:
        rows = [
            f"| {name} | {r['before_ns']:.0f} | {r['after_ns']:.0f} | {r['ratio']:.2f} |"
            for name, r in calls.items()
        ]
    lines = [
        f"Compared with `{args.baseline[:12]}`; the library exception is {origin}.",
        "",
        "| classify(...) | Before (ns) | After (ns) | Ratio |",
        "|---|---:|---:|---:|",
        *rows,
    ]
    if imports is not None:
        lines += [
            "",
            "| Import (median, µs) | Before | After |",
            "|---|---:|---:|",
            (
                "| classification modules, self |"
                f" {imports['before_classify_self_us']:.0f} |"
                f" {imports['after_classify_self_us']:.0f} |"
            ),
            (
                "| `import stalwart`, cumulative |"
                f" {imports['before_stalwart_cumulative_us']:.0f} |"
                f" {imports['after_stalwart_cumulative_us']:.0f} |"
            ),
        ]
    write_section(args, "classify", "Classification cost", results, "\n".join(lines))


if __name__ == "__main__":
    main()
