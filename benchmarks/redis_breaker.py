"""Circuit breakers that keep their state in Redis: time and Redis round trips per call.

A successful call through a closed breaker, and a call rejected by an open one, with
stalwart's `RedisStorage` in strict mode (every admission asks Redis) and in cached mode
(``max_staleness=1.0``: a closed breaker admits from a local copy of its state), next
to pybreaker with its ``CircuitRedisStorage`` and to a plain call, in one pyperf run,
all on the Redis at 127.0.0.1:6379 (``REDIS_URL`` overrides it) through the same
client. Round trips and commands are counted at the client's connections (one round
trip per request sent; a pipeline or a transaction sends several commands in one), over
1,000 calls each; they are printed as a table and kept in each benchmark's metadata
(``redis_round_trips_per_call``, ``redis_commands_per_call``), next to the versions of
the Redis server, redis-py and pybreaker.

pyperf runs the benchmarks one after another, so on a busy machine the load differs
between them, and its figures for one library and the next can differ by a factor of
two for that reason alone. The manager process therefore also times the breakers call
by call in turn, interleaved (`BLOCKS` blocks of `PAIRS` rounds), and prints each
one's median time per call over all rounds and its ratio to pybreaker's: the median,
lowest and highest of the blocks' ratios (each block's median over pybreaker's in the
same block). Those ratios hold up under a changing load, and they are the figures to
publish. ``--interleaved PATH`` also writes them there as JSON.

Run: ``.venv/bin/python benchmarks/redis_breaker.py --fast``. Every process uses
namespaces of its own and deletes its keys when it exits.
"""

from __future__ import annotations

import atexit
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pybreaker
import pyperf
import redis
from _common import fail, plain, sync_loops

import stalwart
from stalwart.contrib.redis import RedisStorage

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = f"stalwart-bench-{uuid.uuid4().hex[:12]}"
SAMPLE = 1000  # calls over which round trips and commands are counted
PAIRS = 1000  # rounds of each block of the interleaved timing
BLOCKS = 5  # blocks of the interleaved timing: the spread of their ratios is printed
CACHED_STALENESS = 1.0


class CountingConnection(redis.Connection):
    """A connection that counts the requests it sends (each one waits for its answer)
    and the commands in them (a pipeline sends several in one request)."""

    sent = 0
    commands: ClassVar[Counter[str]] = Counter()

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands[str(args[0]).upper()] += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        for command in commands:
            CountingConnection.commands[str(command[0]).upper()] += 1
        return super().pack_commands(commands)


def versions(client: redis.Redis) -> dict[str, str]:
    """What the figures depend on, besides the machine: for the run's metadata."""
    from importlib.metadata import version

    return {
        "redis_server": str(client.info("server")["redis_version"]),
        "redis_py": version("redis"),
        "pybreaker": version("pybreaker"),
    }


def connect() -> redis.Redis:
    pool = redis.ConnectionPool.from_url(URL, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(f"redis_breaker.py needs Redis at {URL}: {exc}")
    return client


def cleanup(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"{NAMESPACE}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def pybreaker_on(client: redis.Redis, name: str, fail_max: int) -> pybreaker.CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"{NAMESPACE}-{name}"
    )
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=3600, state_storage=storage)


def stalwart_on(
    client: redis.Redis, name: str, threshold: int, max_staleness: float | None
) -> stalwart.CircuitBreaker:
    storage = RedisStorage(client, prefix=NAMESPACE, max_staleness=max_staleness)
    return stalwart.CircuitBreaker(
        name, failure_threshold=threshold, recovery_timeout=3600, storage=storage, log=False
    )


def closed(client: redis.Redis) -> dict[str, Any]:
    return {
        "plain": plain,
        "stalwart": stalwart_on(client, "closed", 5, None)(plain),
        "stalwart_cached": stalwart_on(client, "closed-cached", 5, CACHED_STALENESS)(plain),
        "pybreaker": pybreaker_on(client, "closed", 5)(plain),
    }


def opened(client: redis.Redis) -> dict[str, Any]:
    """Each breaker opened by a real failure; the wrapped function would raise too."""
    wrapped = {
        "plain": fail,
        "stalwart": stalwart_on(client, "open", 1, None)(fail),
        "stalwart_cached": stalwart_on(client, "open-cached", 1, CACHED_STALENESS)(fail),
        "pybreaker": pybreaker_on(client, "open", 1)(fail),
    }
    for fn in wrapped.values():
        for _ in range(2):
            try:
                fn(1)
            except Exception:
                pass
    return wrapped


def count(fn: Any, *, rejected: bool) -> dict[str, Any]:
    """Round trips and commands per call over `SAMPLE` calls of `fn`."""
    for _ in range(10):  # connect, load the script, fill the cache
        sync_loops(fn, rejected=rejected)(1)
    sent, commands = CountingConnection.sent, Counter(CountingConnection.commands)
    sync_loops(fn, rejected=rejected)(SAMPLE)
    return {
        "round_trips": (CountingConnection.sent - sent) / SAMPLE,
        "commands": {
            name: n / SAMPLE for name, n in (CountingConnection.commands - commands).items()
        },
    }


def interleaved(wrapped: dict[str, Any], *, rejected: bool) -> list[dict[str, list[int]]]:
    """Ns per call of each breaker, timed one call each in turn: `BLOCKS` blocks of
    `PAIRS` rounds, each block a dict of the times of every peer."""
    peers = [(peer, fn) for peer, fn in wrapped.items() if peer != "plain"]
    clock = time.perf_counter_ns
    blocks = []
    for _ in range(BLOCKS):
        times: dict[str, list[int]] = {peer: [] for peer, _ in peers}
        for round_ in range(PAIRS):
            for peer, fn in peers if round_ % 2 else peers[::-1]:
                start = clock()
                try:
                    fn(1)
                except Exception:
                    if not rejected:
                        raise
                times[peer].append(clock() - start)
        blocks.append(times)
    return blocks


def summary(blocks: list[dict[str, list[int]]]) -> dict[str, dict[str, float]]:
    """Per peer: the median µs per call over all rounds, and its ratio to pybreaker's
    in each block (one block's median over the other's): their median, lowest and
    highest."""
    result = {}
    for peer in blocks[0]:
        ratios = [
            statistics.median(block[peer]) / statistics.median(block["pybreaker"])
            for block in blocks
        ]
        result[peer] = {
            "us": statistics.median([t for block in blocks for t in block[peer]]) / 1000,
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return result


def table(counts: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"Redis round trips and commands sent per call ({SAMPLE:,} calls each, {URL}):",
        f"  {'benchmark':<40} {'round trips':>11}  commands",
    ]
    for name, c in counts.items():
        commands = ", ".join(f"{cmd} {n:g}" for cmd, n in sorted(c["commands"].items()))
        lines.append(f"  {name:<40} {c['round_trips']:>11.3f}  {commands or '-'}")
    return "\n".join(lines)


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "circuit breaker with its state in Redis: closed success and open rejection"
    )
    runner.argparser.add_argument(
        "--interleaved", metavar="PATH", help="write the interleaved figures there (JSON)"
    )
    args = runner.parse_args()
    client = connect()
    runner.metadata.update(versions(client))
    atexit.register(cleanup, client)
    scenarios = {
        "redis-breaker-closed-sync": (closed(client), False),
        "redis-breaker-open-sync": (opened(client), True),
    }
    counts: dict[str, dict[str, Any]] = {}
    task = 0
    for scenario, (wrapped, rejected) in scenarios.items():
        for peer, fn in wrapped.items():
            name = f"{scenario}-{peer}"
            metadata = {}
            # The manager counts for its table; a worker only for the benchmark it runs.
            if not args.worker or args.worker_task == task:
                counts[name] = c = count(fn, rejected=rejected)
                metadata = {
                    "redis_round_trips_per_call": f"{c['round_trips']:.3f}",
                    "redis_commands_per_call": f"{sum(c['commands'].values()):.3f}",
                }
            runner.bench_time_func(name, sync_loops(fn, rejected=rejected), metadata=metadata)
            task += 1
    if not args.worker:
        print(table(counts), flush=True)
        print(
            f"Interleaved, {BLOCKS} x {PAIRS:,} rounds: median µs per call; ratio to"
            " pybreaker's, median of the blocks' (lowest-highest):"
        )
        figures = {}
        for scenario, (wrapped, rejected) in scenarios.items():
            for peer, f in summary(interleaved(wrapped, rejected=rejected)).items():
                name = f"{scenario}-{peer}"
                figures[name] = f
                print(
                    f"  {name:<40} {f['us']:>8.1f} µs  {f['ratio']:.2f}"
                    f" ({f['ratio_min']:.2f}-{f['ratio_max']:.2f})",
                    flush=True,
                )
        if args.interleaved:
            document = {"blocks": BLOCKS, "rounds": PAIRS, **runner.metadata, "figures": figures}
            Path(args.interleaved).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
