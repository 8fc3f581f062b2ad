"""A plain httpx client and a stalwart one call the same flaky upstream, side by side.

Run it with ``python examples/http_showcase.py`` (about 21 s), or
``python examples/http_showcase.py --seconds 5`` for a quicker look. Nothing outside
this process is needed: the upstream is a stdlib HTTP server on 127.0.0.1.

The upstream answers 20% of requests with 503 and holds 5% for 0.3-0.8 s, drawing
from seeded random generators (one per client, with the same seed: both clients meet
the same sequence of faults), and for 5 s in the middle of the run it answers 503 to
everything. Two clients call it for the same time, each from two worker threads at a
fixed pace:

- **plain**: ``httpx.Client()`` as it comes (5 s timeout, no retries);
- **stalwart**: ``httpx.Client(transport=ResilientTransport(...))`` with 3 attempts,
  a 0.5 s timeout per attempt, and a circuit breaker that opens after 8 failures in
  a row and probes again after 0.5 s.

Every figure in the final table was counted while it ran: calls and latencies by
the clients, requests by the upstream itself (each client names itself in an
``X-Client`` header), retries by a retry listener, rejections by the breaker's stats.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx

import stalwart
from stalwart.contrib.httpx import ResilientTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SECONDS = 20.0  # how long both clients call the upstream (--seconds to change)
OUTAGE = 5.0  # seconds of total outage, in the middle of the run (shorter for short runs)
SEED = 2026  # the upstream's faults are drawn from random.Random(SEED), per client
ERROR_RATE = 0.20  # share of requests answered 503 outside the outage
SPIKE_RATE = 0.05  # share of requests held for a latency spike...
SPIKE = (0.3, 0.8)  # ...of this many seconds
WORKERS = 2  # threads per client
PACE = 0.05  # each worker starts a call every PACE seconds (or at once when late)
ATTEMPT_TIMEOUT = 0.5  # stalwart's limit on each attempt's network waits
ATTEMPTS = 3  # stalwart's attempts per call, the first included
FAILURES_TO_OPEN = 8  # the breaker opens after this many failed attempts in a row
RECOVERY = 0.5  # seconds the breaker stays open before one probe goes through
CLIENTS = ("plain", "stalwart")


# -- output ----------------------------------------------------------------------------


class Console:
    """Event lines, and one progress line: redrawn with '\\r' on a terminal only.

    Without a terminal (CI logs) no control characters are written: the progress is
    printed as a plain line every few seconds instead.
    """

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.shown = 0  # width of the progress line on screen (terminal only)

    def line(self, text: str) -> None:
        with self.lock:
            if self.shown:
                sys.stdout.write("\r" + " " * self.shown + "\r")
                self.shown = 0
            print(text, flush=True)

    def progress(self, text: str) -> None:
        if not self.tty:
            self.line(text)
            return
        text = text[: shutil.get_terminal_size().columns - 1]  # a wrapped line cannot be redrawn
        with self.lock:
            sys.stdout.write("\r" + text.ljust(self.shown))
            sys.stdout.flush()
            self.shown = len(text)

    def end_progress(self) -> None:
        with self.lock:
            if self.shown:
                sys.stdout.write("\n")
                sys.stdout.flush()
                self.shown = 0


console = Console()


# -- the upstream ----------------------------------------------------------------------


@dataclass
class UpstreamCounts:
    """What the upstream saw from one client (its own counts, by the X-Client header)."""

    received: int = 0
    during_outage: int = 0
    random_503: int = 0
    spikes: int = 0


class Upstream(ThreadingHTTPServer):
    """A flaky service on 127.0.0.1: seeded random 503s and spikes, and one outage.

    Handler threads are not daemons, so `stop` (which closes every live connection
    first) joins them all.
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, seed: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seed = seed
        self.lock = threading.Lock()
        self.rngs: dict[str, random.Random] = {}
        self.counts: dict[str, UpstreamCounts] = {}
        self.outage_from = math.inf  # time.monotonic() values; none until scheduled
        self.outage_until = math.inf
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.thread = threading.Thread(target=self.serve_forever, name="upstream")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/price"

    def start(self) -> None:
        self.thread.start()

    def schedule_outage(self, start: float, seconds: float) -> None:
        with self.lock:
            self.outage_from, self.outage_until = start, start + seconds

    def down(self, now: float) -> bool:
        return self.outage_from <= now < self.outage_until

    def decide(self, client: str) -> tuple[int, float]:
        """Count one request and draw its fate: (status, seconds to wait first)."""
        now = time.monotonic()
        with self.lock:
            counts = self.counts.setdefault(client, UpstreamCounts())
            rng = self.rngs.setdefault(client, random.Random(self.seed))
            counts.received += 1
            roll = rng.random()  # drawn during the outage too: the same sequence after it
            delay = rng.uniform(*SPIKE) if roll >= 1 - SPIKE_RATE else rng.uniform(0.001, 0.004)
            if self.down(now):
                counts.during_outage += 1
                return 503, 0.0
            if roll < ERROR_RATE:
                counts.random_503 += 1
                return 503, 0.0
            if roll >= 1 - SPIKE_RATE:
                counts.spikes += 1
            return 200, delay

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, end every keep-alive connection, join every thread."""
        self.stopping.set()
        self.shutdown()
        self.thread.join()
        with self.lock:
            live = list(self.connections)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the handler's next read sees EOF
        self.server_close()  # joins the handler threads (block_on_close)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real services
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stalls
    timeout = 10.0  # a connection idle this long is dropped (a guard; never reached)
    server: Upstream

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client went away
            super().handle()

    def do_GET(self) -> None:
        status, delay = self.server.decide(self.headers.get("X-Client", "unknown"))
        if delay and self.server.stopping.wait(delay):
            return
        body = b'{"sku": "ACME-1", "price": 9.99}' if status == 200 else b"unavailable"
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Keep quiet: no request log on stderr."""


# -- what the clients count ------------------------------------------------------------


@dataclass
class Tally:
    """One client's calls as it saw them: outcome and latency of every client.get()."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    rejected_latencies: list[float] = field(default_factory=list)
    ok: int = 0
    error_status: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    ok_after_retry: int = 0
    outside_calls: int = 0  # calls started outside the outage window...
    outside_ok: int = 0  # ...those of them that succeeded...
    outside_rejected: int = 0  # ...and those that met an open breaker

    @property
    def calls(self) -> int:
        return len(self.latencies)

    def record(
        self,
        outcome: str | int | None,
        latency: float,
        retries: int,
        *,
        outside: bool,
    ) -> None:
        """Count one call: outcome is None for a 2xx, a status, or an exception's name."""
        with self.lock:
            self.latencies.append(latency)
            if outside:
                self.outside_calls += 1
            if outcome is None:
                self.ok += 1
                self.outside_ok += outside
                self.ok_after_retry += retries > 0
            elif outcome == "CircuitOpenError":
                self.rejected += 1
                self.outside_rejected += outside
                self.rejected_latencies.append(latency)
            elif isinstance(outcome, int):
                self.error_status[outcome] += 1
            else:
                self.exceptions[outcome] += 1

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.calls, self.ok


_this_call = threading.local()  # retries of the call the current worker thread is making


class RetryCounter:
    """A stalwart retry listener: counts retries and give-ups, by cause."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries: Counter[str] = Counter()
        self.give_ups: Counter[str] = Counter()

    @staticmethod
    def cause(details: stalwart.RetryDetails) -> str:
        if details.exception_type is not None:
            return details.exception_type.rpartition(".")[2]
        return f"HTTP {getattr(details.result, 'status_code', '?')}"

    def on_retry(self, details: stalwart.RetryDetails) -> None:
        with self.lock:
            self.retries[self.cause(details)] += 1
        _this_call.retries = getattr(_this_call, "retries", 0) + 1

    def on_give_up(self, details: stalwart.RetryDetails) -> None:
        with self.lock:
            self.give_ups[self.cause(details)] += 1


class BreakerWatcher:
    """A breaker listener: prints each state change as it happens and counts openings."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.opened = 0
        self.state = "closed"

    def on_state_change(self, change: Any) -> None:
        self.state = change.new
        if change.new == "open":
            self.opened += 1
        console.line(
            f"  [{self.clock():5.1f} s] stalwart breaker {change.old} -> {change.new}"
            f" ({change.reason})"
        )


# -- the run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When the run starts (a time.monotonic() value), how long it lasts, when it fails."""

    start: float
    seconds: float
    outage_at: float  # seconds after start
    outage: float  # seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def outside_outage(self, at: float) -> bool:
        offset = at - self.start
        return not self.outage_at <= offset < self.outage_at + self.outage


def worker(
    client: httpx.Client, url: str, tally: Tally, schedule: Schedule, offset: float
) -> None:
    """Call the upstream every PACE seconds until the run ends, counting every call."""
    next_start = schedule.start + offset
    stop_at = schedule.start + schedule.seconds
    while True:
        wait = next_start - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        began = time.monotonic()
        if began >= stop_at:
            return
        _this_call.retries = 0
        started = time.perf_counter()
        outcome: str | int | None
        try:
            response = client.get(url)
        except stalwart.CircuitOpenError:
            outcome = "CircuitOpenError"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        else:
            outcome = None if response.is_success else response.status_code
        latency = time.perf_counter() - started
        tally.record(outcome, latency, _this_call.retries, outside=schedule.outside_outage(began))
        next_start = max(next_start + PACE, time.monotonic())


class Showcase:
    """The upstream, both clients and everything that counts what happens."""

    def __init__(self, seconds: float, seed: int) -> None:
        outage = min(OUTAGE, seconds / 4)
        self.upstream = Upstream(seed)
        start = time.monotonic() + 0.2  # a moment for the threads to start
        self.schedule = Schedule(start, seconds, (seconds - outage) / 2, outage)
        self.upstream.schedule_outage(start + self.schedule.outage_at, outage)
        self.retries = RetryCounter()
        self.watcher = BreakerWatcher(self.schedule.elapsed)
        self.breaker = stalwart.CircuitBreaker(
            "upstream",
            failure_threshold=FAILURES_TO_OPEN,
            window=None,  # failures in a row
            recovery_timeout=RECOVERY,
            listeners=[self.watcher],
            log=False,
        )
        transport = ResilientTransport(
            retry=stalwart.retry(
                attempts=ATTEMPTS,
                backoff=stalwart.exponential(initial=0.05, max=0.5),
                listeners=[self.retries],
                log=False,
            ),
            breaker=self.breaker,
            timeout=ATTEMPT_TIMEOUT,
        )
        self.clients = {
            "plain": httpx.Client(headers={"X-Client": "plain"}),
            "stalwart": httpx.Client(headers={"X-Client": "stalwart"}, transport=transport),
        }
        self.tallies = {name: Tally(name) for name in CLIENTS}

    def introduce(self) -> None:
        schedule = self.schedule
        until = schedule.outage_at + schedule.outage
        print(f"Upstream on {self.upstream.url}: {ERROR_RATE:.0%} of requests get 503 and")
        print(f"  {SPIKE_RATE:.0%} wait {SPIKE[0]:g}-{SPIKE[1]:g} s (seed {self.upstream.seed});")
        print(
            f"  from {schedule.outage_at:g} s to {until:g} s every request gets 503 (the outage)."
        )
        print(f"Two clients call it for {schedule.seconds:g} s, {WORKERS} threads each, one call")
        print(f"  per thread every {PACE * 1000:g} ms (at once when the last one took longer):")
        print("  plain:    httpx.Client(): 5 s timeout, no retries")
        print(
            f"  stalwart: ResilientTransport: {ATTEMPTS} attempts, {ATTEMPT_TIMEOUT:g} s per"
            f" attempt,\n            breaker opens after {FAILURES_TO_OPEN} failures in a row,"
            f" probes after {RECOVERY:g} s"
        )
        print(flush=True)

    def run(self) -> int:
        self.introduce()
        schedule, url = self.schedule, self.upstream.url
        self.upstream.start()
        threads = [
            threading.Thread(
                target=worker,
                args=(self.clients[name], url, self.tallies[name], schedule, i * PACE / WORKERS),
                name=f"{name}-{i}",
            )
            for name in CLIENTS
            for i in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        try:
            self.watch(threads)
        finally:
            for thread in threads:
                thread.join()
            console.end_progress()
            for client in self.clients.values():
                client.close()
            self.upstream.stop()
        print(f"  [{schedule.elapsed():5.1f} s] done: clients closed, upstream stopped")
        self.report()
        leftover = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if leftover:
            print(f"Threads still running: {', '.join(leftover)}")
            return 1
        return 0

    def watch(self, threads: list[threading.Thread]) -> None:
        """Announce the outage and show progress until every worker has finished."""
        upstream, schedule = self.upstream, self.schedule
        step = 0.25 if console.tty else max(2.0, schedule.seconds / 5)
        next_progress = time.monotonic() + (0.0 if console.tty else step)
        began = ended = False
        while any(thread.is_alive() for thread in threads):
            now = time.monotonic()
            if not began and upstream.down(now):
                began = True
                console.line(f"  [{schedule.elapsed():5.1f} s] upstream: the outage begins")
            if began and not ended and now >= upstream.outage_until:
                ended = True
                console.line(f"  [{schedule.elapsed():5.1f} s] upstream: the outage is over")
            if now >= next_progress:
                console.progress(self.progress())
                next_progress = now + step
            time.sleep(0.05)

    def progress(self) -> str:
        """One line: time, the upstream's state, each client's calls so far, the breaker."""
        schedule = self.schedule
        now = min(max(schedule.elapsed(), 0.0), schedule.seconds)
        state = "DOWN" if self.upstream.down(time.monotonic()) else "up"
        so_far = []
        for name, tally in self.tallies.items():
            calls, ok = tally.snapshot()
            so_far.append(f"{name} {rate(ok, calls):4.0%} of {calls:3}")
        return (
            f"[{now:4.1f}/{schedule.seconds:g} s] upstream {state:4} | ok: {', '.join(so_far)}"
            f" | breaker {self.watcher.state}"
        )

    # -- the report ------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str, str] | str]:
        plain, ours = self.tallies["plain"], self.tallies["stalwart"]
        seen = [self.upstream.counts.get(name, UpstreamCounts()) for name in CLIENTS]
        statuses = sorted({*plain.error_status, *ours.error_status})
        status_label = ", ".join(map(str, statuses)) or "none"

        def both(value: Callable[[Tally], str]) -> tuple[str, str]:
            return value(plain), value(ours)

        def server(value: Callable[[UpstreamCounts], int]) -> tuple[str, str]:
            return f"{value(seen[0]):,}", f"{value(seen[1]):,}"

        def ours_only(counter: Counter[str]) -> list[tuple[str, str, str]]:
            return [(f"  {cause}", "-", f"{n:,}") for cause, n in counter.most_common()]

        return [
            "What the clients saw (one call = one client.get)",
            ("calls made", *both(lambda t: f"{t.calls:,}")),
            ("succeeded (2xx)", *both(lambda t: share(t.ok, t.calls))),
            (
                "  success rate, calls started outside the outage",
                *both(lambda t: f"{rate(t.outside_ok, t.outside_calls):.1%}"),
            ),
            (
                "  calls started outside the outage, breaker open",
                *both(lambda t: f"{t.outside_rejected:,}"),
            ),
            ("  succeeded after one retry or more", "-", f"{ours.ok_after_retry:,}"),
            (
                f"failed: error status ({status_label})",
                *both(lambda t: share(sum(t.error_status.values()), t.calls)),
            ),
            (
                "failed: exception (timeout, connection)",
                *both(lambda t: share(sum(t.exceptions.values()), t.calls)),
            ),
            ("failed fast: CircuitOpenError", *both(lambda t: share(t.rejected, t.calls))),
            ("latency p50 (ms)", *both(lambda t: ms(percentile(t.latencies, 50)))),
            ("latency p99 (ms)", *both(lambda t: ms(percentile(t.latencies, 99)))),
            ("latency max (ms)", *both(lambda t: ms(max(t.latencies, default=None)))),
            "What the upstream saw (its own counts, by X-Client header)",
            ("requests received", *server(lambda c: c.received)),
            (
                f"  during the {self.schedule.outage:g} s outage",
                *server(lambda c: c.during_outage),
            ),
            ("  answered 503 at random, outside it", *server(lambda c: c.random_503)),
            ("  held for a latency spike", *server(lambda c: c.spikes)),
            "What stalwart reported (its listeners and breaker.stats())",
            ("retries, after:", "-", f"{sum(self.retries.retries.values()):,}"),
            *ours_only(self.retries.retries),
            (
                "gave up after the last attempt, on:",
                "-",
                f"{sum(self.retries.give_ups.values()):,}",
            ),
            *ours_only(self.retries.give_ups),
            ("breaker rejections (stats().rejected)", "-", f"{self.breaker.stats().rejected:,}"),
            ("breaker openings (state-change listener)", "-", f"{self.watcher.opened:,}"),
        ]

    def report(self) -> None:
        rows = self.rows()
        cells = [row for row in rows if isinstance(row, tuple)]
        label_width = max(len(row[0]) for row in cells)
        width = max(len("plain httpx"), *(len(cell) for row in cells for cell in row[1:]))
        print()
        print(f"{'':{label_width}}  {'plain httpx':>{width}}  {'stalwart':>{width}}")
        for row in rows:
            if isinstance(row, str):
                print(row)
            else:
                print(f"{row[0]:<{label_width}}  {row[1]:>{width}}  {row[2]:>{width}}")
        print()
        for sentence in self.summary():
            print(sentence)

    def summary(self) -> list[str]:
        """Two or three sentences, each backed by figures in the table."""
        plain, ours = self.tallies["plain"], self.tallies["stalwart"]
        p_out, s_out = (self.upstream.counts.get(n, UpstreamCounts()) for n in CLIENTS)
        p_rate = rate(plain.outside_ok, plain.outside_calls)
        s_rate = rate(ours.outside_ok, ours.outside_calls)
        retries = sum(self.retries.retries.values())
        first = (
            f"Outside the outage stalwart's client answered {s_rate:.1%} of its calls and the"
            f" plain one {p_rate:.1%}; {ours.ok_after_retry:,} of stalwart's successes came"
            f" from a retry ({retries:,} retries in all)."
        )
        if ours.outside_rejected:
            first = first[:-1] + (
                f", and {ours.outside_rejected:,} of its calls outside the outage met an open"
                " breaker."
            )
        lines = [first]
        rejected = ours.rejected - ours.outside_rejected  # calls started during the outage
        if rejected:
            fast = ms(percentile(ours.rejected_latencies, 50))
            lines.append(
                f"During the outage the upstream got {p_out.during_outage:,} requests from the"
                f" plain client and {s_out.during_outage:,} from stalwart's, whose open breaker"
                f" failed {rejected:,} calls at once without sending them (p50 {fast} ms)."
            )
        else:
            lines.append(
                f"During the outage the upstream got {p_out.during_outage:,} requests from the"
                f" plain client and {s_out.during_outage:,} from stalwart's; its breaker"
                " rejected none of the calls started during it."
            )
        timeouts = sum(n for cause, n in self.retries.retries.items() if "Timeout" in cause)
        p99_plain, p99_ours = percentile(plain.latencies, 99), percentile(ours.latencies, 99)
        if timeouts and p99_plain is not None and p99_ours is not None:
            lines.append(
                f"p99 latency: {ms(p99_plain)} ms plain, {ms(p99_ours)} ms with stalwart; its"
                f" {ATTEMPT_TIMEOUT:g} s limit per attempt cut {timeouts:,} slow attempts short,"
                " and retried them."
            )
        return lines


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def ms(seconds: float | None) -> str:
    """Milliseconds, with decimals only where they carry information."""
    if seconds is None:
        return "-"
    value = seconds * 1000
    if value < 1:
        return f"{value:.2f}"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS,
        help=f"how long the clients call the upstream (default {SECONDS:g})",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"fault seed (default {SEED})")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 600:
        parser.error(f"--seconds must be between 1 and 600, got {args.seconds:g}")
    return Showcase(args.seconds, args.seed).run()


if __name__ == "__main__":
    sys.exit(main())
