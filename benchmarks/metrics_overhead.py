"""What the Prometheus exporter costs: the success path with it installed, and a scrape.

The exporter reads the breakers' own counts at scrape time and counts rare events
through a subscriber, so a successful call should cost the same with it as without.
This section measures, in one process and interleaved (without, with, without, ...),
a successful call through a closed breaker and through ``@stalwart.retry``, with the
exporter installed and not, and gives the ratio of the best times. It also times one
collection of the breaker families for 1,000 breakers. Run:
``.venv/bin/python benchmarks/metrics_overhead.py --fast``.
"""

from __future__ import annotations

import time
from typing import Any

from _common import plain, section_args, write_section
from prometheus_client import CollectorRegistry, generate_latest

import stalwart
from stalwart.contrib import prometheus

CALLS = 20_000
"""Calls per timed run."""


def _best(fn: Any, calls: int) -> float:
    """Nanoseconds per call of one run of `calls` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(1)
    return (time.perf_counter() - t0) / calls * 1e9


def overhead(rounds: int) -> dict[str, dict[str, float]]:
    """Best ns per call without and with the exporter, interleaved, and their ratio."""
    breakers = stalwart.BreakerRegistry()
    subjects = {
        "closed breaker": breakers.get("bench", log=False)(plain),
        "retry": stalwart.retry(attempts=3, log=False)(plain),
    }
    results: dict[str, dict[str, float]] = {}
    for name, fn in subjects.items():
        without: list[float] = []
        with_: list[float] = []
        for _ in range(rounds):
            without.append(_best(fn, CALLS))
            inst = prometheus.instrument(breakers, collector_registry=CollectorRegistry())
            try:
                with_.append(_best(fn, CALLS))
            finally:
                inst.uninstall()
        results[name] = {
            "without_ns": min(without),
            "with_ns": min(with_),
            "ratio": min(with_) / min(without),
        }
    return results


def scrape_time(breakers_count: int, rounds: int) -> float:
    """Best milliseconds for one full exposition of `breakers_count` breakers."""
    breakers = stalwart.BreakerRegistry()
    kept = [breakers.get(f"host-{i}", log=False) for i in range(breakers_count)]
    registry = CollectorRegistry()
    inst = prometheus.instrument(breakers, collector_registry=registry)
    try:
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            generate_latest(registry)
            best = min(best, time.perf_counter() - t0)
    finally:
        inst.uninstall()
    del kept
    return best * 1e3


def main() -> None:
    args = section_args(__doc__ or "")
    rounds = 5 if args.fast else 21
    results: dict[str, Any] = overhead(rounds)
    results["scrape_1000_breakers_ms"] = scrape_time(1000, 3 if args.fast else 11)
    rows = [
        f"| {name} | {r['without_ns']:.0f} | {r['with_ns']:.0f} | {r['ratio']:.3f} |"
        for name, r in results.items()
        if isinstance(r, dict)
    ]
    markdown = "\n".join(
        [
            "| Successful call | Without exporter (ns) | With exporter (ns) | Ratio |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            (
                "Scrape of 1,000 breakers (every family, text format):"
                f" {results['scrape_1000_breakers_ms']:.1f} ms."
            ),
        ]
    )
    write_section(args, "metrics_overhead", "Prometheus exporter overhead", results, markdown)


if __name__ == "__main__":
    main()
