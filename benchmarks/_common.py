"""What the breaker benchmarks share: the protected functions and the timed loop."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pyperf


class Down(ConnectionError):
    """What the failing dependency raises."""


def plain(x: int) -> int:
    return x


def fail(x: int) -> int:
    raise Down(x)


def sync_loops(fn: Any, *, rejected: bool) -> Any:
    """A pyperf time function calling `fn(1)` `loops` times (catching, if `rejected`)."""

    def time_it(loops: int) -> float:
        t0 = pyperf.perf_counter()
        if rejected:
            for _ in range(loops):
                try:
                    fn(1)
                except Exception:
                    pass
        else:
            for _ in range(loops):
                fn(1)
        return pyperf.perf_counter() - t0

    return time_it


# -- scenarios that are not ns per call (threads, fan-out, memory) ---------------------
# Each such script measures wall times or bytes itself, prints a Markdown table and,
# given ``--json PATH``, writes ``{"name", "title", "results", "markdown"}`` there for
# run.py to merge into results/latest.json and latest.md. ``--fast`` makes fewer runs.


def section_args(description: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="write the section there")
    return parser.parse_args()


def write_section(
    args: Any, name: str, title: str, results: dict[str, Any], markdown: str
) -> None:
    import json
    import sys
    from pathlib import Path

    print(f"## {title}\n\n{markdown}")
    if args.json:
        section = {
            "name": name,
            "title": title,
            "python": sys.version.split()[0],
            "fast": args.fast,
            "results": results,
            "markdown": markdown,
        }
        Path(args.json).write_text(json.dumps(section, indent=2) + "\n")


def async_loops(make: Any, name: str, *, rejected: bool = False) -> Any:
    """A pyperf time function awaiting ``make()[name](1)`` `loops` times in a new loop.

    `make` builds the callables inside the running loop (some peers bind to it), and
    may be a coroutine function; with `rejected`, each call's exception is caught.
    """

    def time_it(loops: int) -> float:
        async def run() -> float:
            made = make()  # purgatory binds to the running loop: build inside it
            fn = (await made if inspect.isawaitable(made) else made)[name]
            t0 = pyperf.perf_counter()
            if rejected:
                for _ in range(loops):
                    try:
                        await fn(1)
                    except Exception:
                        pass
            else:
                for _ in range(loops):
                    await fn(1)
            return pyperf.perf_counter() - t0

        return asyncio.run(run())

    return time_it
