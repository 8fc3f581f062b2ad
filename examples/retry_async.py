"""Retry async code: a decorated coroutine function, and an ``async for`` block.

Run it with ``python examples/retry_async.py``. The waits use anyio, so the same code
runs under asyncio (used here) and trio.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import stalwart

logging.basicConfig(
    stream=sys.stdout,
    level=logging.INFO,
    format="    [log] %(levelname)s %(name)s: %(message)s",
)


class PriceFeed:
    """A stand-in for a remote API whose first calls per symbol time out."""

    def __init__(self, timeouts: dict[str, int]) -> None:
        self.timeouts = dict(timeouts)
        self.calls = dict.fromkeys(timeouts, 0)

    async def price(self, symbol: str) -> float:
        self.calls[symbol] += 1
        await asyncio.sleep(0.005)  # network latency
        if self.calls[symbol] <= self.timeouts[symbol]:
            print(f"  {symbol}: call {self.calls[symbol]} timed out")
            raise TimeoutError(f"read timed out for {symbol}")
        print(f"  {symbol}: call {self.calls[symbol]} answered")
        return 100.0 + len(symbol)


feed = PriceFeed({"ACME": 2, "GLOBEX": 0, "INITECH": 1})


@stalwart.retry(attempts=4, backoff=stalwart.constant(0.02))
async def fetch_price(symbol: str) -> float:
    return await feed.price(symbol)


async def connect(attempt_number: int) -> str:
    await asyncio.sleep(0.005)
    if attempt_number < 3:
        raise ConnectionResetError("connection reset by peer")
    return "connected"


async def main() -> None:
    print("1. Three decorated calls running concurrently, each retried on its own:")
    prices = await asyncio.gather(*(fetch_price(symbol) for symbol in feed.calls))
    for symbol, price in zip(feed.calls, prices, strict=True):
        print(f"  -> {symbol} = {price} after {feed.calls[symbol]} attempt(s)")
    print()

    print("2. A block retried with `async for attempt in stalwart.retrying(...)`:")
    status = "not connected"
    async for attempt in stalwart.retrying(
        attempts=5, backoff=stalwart.constant(0.02), name="connect"
    ):
        with attempt:
            print(f"  attempt {attempt.number}: connecting")
            status = await connect(attempt.number)
    print(f"  -> {status}")


if __name__ == "__main__":
    asyncio.run(main())
