"""Hedging overhead: an async call that answers before the hedge delay, so no hedge starts.

What a hedged call pays when hedging is not needed (the common case, 95 % of calls at a
p95 delay): the task group holding the attempt and the hedge timer, the timer's start
and cancellation, the decision object. Side by side: a bare ``await``, and an anyio task
group running the call as one task (the floor of any hedging that cancels its losers
structurally). No Python peer hedges. Run: ``.venv/bin/python benchmarks/hedge.py --fast``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pyperf
from _common import async_loops

from stalwart.hedge import Hedger


async def answer(x: int) -> int:
    return x


async def in_task_group(x: int) -> int:
    result: list[int] = []

    async def run() -> None:
        result.append(await answer(x))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
    return result[0]


def made() -> dict[str, Any]:
    fixed = Hedger("bench", delay=1.0)
    learning = Hedger("bench-p95", percentile=95, min_samples=1, min_delay=1.0)  # records, reads
    return {
        "plain": answer,
        "task-group": in_task_group,
        "stalwart-fixed": fixed(answer),
        "stalwart-p95": learning(answer),
    }


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "hedged async call answered before the delay"
    for name in made():
        runner.bench_time_func(f"hedge-no-hedge-{name}", async_loops(made, name))


if __name__ == "__main__":
    main()
