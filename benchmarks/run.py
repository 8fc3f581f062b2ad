"""Run every benchmark, write results/latest.json and a Markdown table of the figures.

Each per-call scenario measures stalwart next to its peers and a plain call in one
pyperf run; the table gives ns per call (ms per process for imports), the overhead
above the plain call, and the ratio of each peer's overhead to stalwart's. The
scenarios that are not per call (threads, asyncio fan-out, memory) measure wall times
and bytes themselves; their figures go into latest.json under ``"sections"`` (pyperf
ignores that key) and their tables after the pyperf one in latest.md. Usage:

- ``make bench``: a quick run of a few minutes. Each pyperf benchmark runs in
  `QUICK` worker processes (pyperf's minimum of 3, for 3 hash seeds) instead of
  pyperf's 20 (10 with ``--fast``), and the sections run with ``--fast``. What is
  timed is the same; there are fewer values, so the spread is wider.
- ``BENCH_FULL=1 make bench``: pyperf's own defaults, and the sections in full.
- ``BENCH_ARGS="..."`` goes to every pyperf script after these. Any of pyperf's own
  sizing options there (``--fast``, ``--rigorous``, ``-p``, ``-n``, ...) replaces
  `QUICK`; pyperf ignores ``-p``/``-n`` beside ``--fast``. Only ``--fast`` (or the
  quick default) reaches the sections.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyperf

HERE = Path(__file__).parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", "") or HERE / "results")
"""Where latest.json and latest.md go: ``BENCH_RESULTS`` overrides it."""
SCRIPTS = [
    "retry_happy_path.py",
    "retry_failures.py",
    "breaker.py",
    "policy_stack.py",
    "imports.py",
    "redis_breaker.py",
    "bulkhead.py",
    "retry_budget.py",
    "hedge.py",
]
SECTIONS = [  # their own figures
    "threads.py",
    "fanout.py",
    "memory.py",
    "celery_tasks.py",
    "fastapi_middleware.py",
    "metrics_overhead.py",
    "classify.py",
]
NEEDS_SERVICE = {"redis_breaker.py", "celery_tasks.py"}
"""Skipped, not failed, when their server is down, unless STALWART_REQUIRE_SERVICES=1."""
REQUIRE_SERVICES = os.environ.get("STALWART_REQUIRE_SERVICES") == "1"


QUICK = ["--processes=3", "--values=3"]
"""pyperf options of the default run: 3 workers x 3 values a benchmark, after one
calibration worker (pyperf's defaults: 20 x 3; ``--fast``: 10 x 2)."""
SIZING = {"--fast", "--rigorous", "--debug-single-value", "-p", "--processes", "-n", "--values"}


def extra_args() -> list[str]:
    return shlex.split(os.environ.get("BENCH_ARGS", ""))


def quick() -> bool:
    """The default run: neither BENCH_FULL nor a pyperf sizing option in BENCH_ARGS."""
    if os.environ.get("BENCH_FULL", "") not in ("", "0"):
        return False
    return not any(arg.split("=")[0] in SIZING or arg[:2] in {"-p", "-n"} for arg in extra_args())


def bench_args() -> list[str]:
    return [*(QUICK if quick() else []), *extra_args()]


def run(script: str, out: Path) -> None:
    subprocess.run(
        [sys.executable, str(HERE / script), "--quiet", "-o", str(out), *bench_args()],
        check=True,
    )


def run_section(script: str, out: Path) -> dict[str, object]:
    args = extra_args()
    fast = ["--fast"] if quick() or "--fast" in args or "--debug-single-value" in args else []
    subprocess.run([sys.executable, str(HERE / script), "--json", str(out), *fast], check=True)
    section: dict[str, object] = json.loads(out.read_text())
    return section


def table(suite: pyperf.BenchmarkSuite) -> str:
    means = {b.get_name(): b.mean() * 1e9 for b in suite.get_benchmarks()}
    groups: dict[str, dict[str, float]] = {}
    for name, ns in means.items():
        scenario, _, peer = name.rpartition("-")
        groups.setdefault(scenario, {})[peer] = ns
    lines = [
        (
            f"Recorded {datetime.now(timezone.utc):%Y-%m-%d} on {platform.machine()},"
            f" {os.cpu_count()} cores, Python {platform.python_version()}."
        ),
        "",
        "| scenario | library | ns per call | overhead (ns) | overhead vs stalwart |",
        "|---|---|---:|---:|---:|",
    ]
    processes = [
        "",
        (
            "Imports, each in a fresh interpreter (plain: `python -c pass`; the overhead of"
            " `stalwart.contrib.httpx` is over `import httpx`):"
        ),
        "",
        "| scenario | library | ms per process | overhead (ms) | overhead vs stalwart |",
        "|---|---|---:|---:|---:|",
    ]
    for scenario, peers in groups.items():
        per_process = scenario.startswith("import-")
        base = peers.get("plain", 0.0)
        ours = peers.get("stalwart", 0.0) - base
        for peer, ns in sorted(peers.items(), key=lambda kv: kv[1]):
            # `import stalwart.contrib.httpx` is measured on top of `import httpx`.
            below = peers.get("httpx", base) if peer == "stalwart.contrib.httpx" else base
            over = ns - below
            ratio = "" if peer == "plain" or ours <= 0 else f"{over / ours:.1f}x"
            if per_process:
                processes.append(
                    f"| {scenario} | {peer} | {ns / 1e6:,.1f} | {over / 1e6:,.1f} | {ratio} |"
                )
            else:
                lines.append(f"| {scenario} | {peer} | {ns:,.0f} | {over:,.0f} | {ratio} |")
    if len(processes) > 5:
        lines += processes
    return "\n".join(lines) + "\n"


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    print(f"pyperf options: {shlex.join(bench_args()) or 'pyperf defaults'}", flush=True)
    benchmarks: list[pyperf.Benchmark] = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in SCRIPTS:
            out = Path(tmp) / f"{script}.json"
            try:
                run(script, out)
            except subprocess.CalledProcessError:
                if script not in NEEDS_SERVICE or REQUIRE_SERVICES:
                    raise
                print(f"skipped {script}: its service is not reachable (see its message)")
                continue
            benchmarks.extend(pyperf.BenchmarkSuite.load(str(out)).get_benchmarks())
        sections = []
        for script in SECTIONS:
            try:
                sections.append(run_section(script, Path(tmp) / f"{script}.json"))
            except subprocess.CalledProcessError:
                if script not in NEEDS_SERVICE or REQUIRE_SERVICES:
                    raise
                print(f"skipped {script}: its service is not reachable (see its message)")
    suite = pyperf.BenchmarkSuite(benchmarks)
    latest = RESULTS / "latest.json"
    latest.unlink(missing_ok=True)
    suite.dump(str(latest))
    merged = json.loads(latest.read_text())
    merged["sections"] = {str(section["name"]): section for section in sections}
    latest.write_text(json.dumps(merged, indent=1) + "\n")
    markdown = table(suite)
    for section in sections:
        markdown += f"\n## {section['title']}\n\n{section['markdown']}\n"
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
