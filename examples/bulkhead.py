"""A bulkhead in front of a slow dependency: a burst of 12 calls, 3 slots, 3 places to wait.

Three calls run at once; three more wait their turn (first come, first served) and
run as slots free; the other six fail at once with `BulkheadFull` instead of piling
up behind the slow service. Then the stats, as the health and stats endpoints show
them. Run: ``python examples/bulkhead.py``.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

import stalwart
from stalwart.bulkhead import bulkhead

SERVICE_TIME = 0.2  # seconds each call to the slow service takes
reports = bulkhead("reports", max_concurrent=3, max_queued=3, queue_timeout=1.0)


@reports
async def render(report: int) -> str:
    await anyio.sleep(SERVICE_TIME)  # the slow dependency
    return f"report {report}"


async def request(report: int, started: float, lines: list[tuple[float, str]]) -> None:
    try:
        await render(report)
    except stalwart.BulkheadFull as exc:
        reason = exc.args[1]
        lines.append((time.perf_counter() - started, f"call {report:2}: refused ({reason})"))
    else:
        lines.append((time.perf_counter() - started, f"call {report:2}: done"))


async def main() -> None:
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for report in range(12):
            tasks.start_soon(request, report, started, lines)
            await anyio.lowlevel.checkpoint()  # let each arrive in order
    for at, line in lines:  # in the order they ended
        print(f"after {at:.1f} s  {line}")
    stats = reports.stats()
    print(
        f"\nadmitted {stats.admitted} (of which {stats.waited} waited),"
        f" refused {stats.rejected}, at most {stats.peak_in_use} at once,"
        f" saturated: {stats.saturated}"
    )


if __name__ == "__main__":
    anyio.run(main)
