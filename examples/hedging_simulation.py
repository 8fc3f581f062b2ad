"""Tail latency with and without hedged requests, on a service with a slow 5 % of calls.

A service answers most requests in about 20 ms, but 5 % of its attempts are slow (200 ms
to 1 s: a pause, a busy replica, a lost packet). Callers send 100 requests a second.
Hedging sends a second copy of a request that has not answered after a delay, keeps the
first answer and cancels the other copy: the slow 5 % then mostly cost the delay plus
one fast answer, for a few percent more requests.

The hedging decisions are the real ones: each call goes through a `stalwart.Hedger`'s
decision object (`Hedger.begin`), on a simulated clock, in a discrete-event model
(nothing sleeps, nothing runs in threads), so a percentile hedger learns its delay from
the latencies it sees as it would in production. Scenarios: no hedging, a fixed 50 ms
delay, the p95 and p90 of recent latencies, and p95 with two hedges.

Two services are modelled. In the first, slowness is bad luck: each attempt is slow with
probability 5 %, whatever the request. In the second, half of the slow calls are slow
because of the request itself (a heavy query): every copy of it is slow, and hedging
them only adds load.

Printed: the hedge delay in force at the end, p50, p90, p99 and p99.9 of the call
latency, the extra requests sent (hedges per call), the extra service time (the time the
service spends on every request it receives, over the time without hedging: a server
rarely learns that a request was cancelled, so it is counted in full), and how often a
hedge won.

Run: ``python examples/hedging_simulation.py`` (add ``--calls``, ``--seed``;
``--write-docs`` rewrites the tables and the SVG plot in docs/hedging.md).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalwart.hedge import HedgedCall, Hedger

DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass(frozen=True)
class Service:
    """Attempt latencies: log-normal around `median`, and a slow share."""

    name: str
    median: float = 0.020
    """Seconds, for a normal attempt."""
    sigma: float = 0.25
    """Spread of normal attempts (of the log of the latency)."""
    slow_share: float = 0.05
    """Share of calls that are slow."""
    slow_min: float = 0.200
    slow_max: float = 1.000
    request_bound: float = 0.0
    """Share of the slow calls slow because of the request: every attempt of it is slow."""


SERVICES = (
    Service("slowness is bad luck (each attempt)"),
    Service("half the slowness belongs to the request", request_bound=0.5),
)


@dataclass(frozen=True)
class Scenario:
    """How calls are hedged (None: not at all)."""

    name: str
    options: dict[str, Any] | None


SCENARIOS = (
    Scenario("no hedging", None),
    Scenario("fixed 50 ms", {"delay": 0.050}),
    Scenario("p95", {"percentile": 95}),
    Scenario("p90", {"percentile": 90}),
    Scenario("p95, 2 hedges", {"percentile": 95, "max_hedges": 2}),
)


@dataclass
class Result:
    """What one scenario came to on one service."""

    service: Service
    scenario: Scenario
    latencies: list[float] = field(default_factory=list)
    attempts: int = 0
    busy: float = 0.0
    hedge_wins: int = 0
    hedger: Hedger | None = None

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


class Clock:
    """The simulated time, read by the hedger."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MAX_ATTEMPTS = 3
"""Attempts per call at most, in every scenario (1 + 2 hedges)."""


def latencies(service: Service, calls: int, seed: int) -> list[list[float]]:
    """Each call's attempt latencies, drawn once: the same in every scenario."""
    rng = random.Random(seed)
    drawn = []
    for _ in range(calls):
        slow_call = rng.random() < service.slow_share  # its first attempt is slow
        bound = slow_call and rng.random() < service.request_bound  # and every other one
        attempts = []
        for attempt in range(MAX_ATTEMPTS):
            slow = slow_call if attempt == 0 else bound or rng.random() < service.slow_share
            if slow:
                attempts.append(rng.uniform(service.slow_min, service.slow_max))
            else:
                attempts.append(service.median * math.exp(service.sigma * rng.gauss(0.0, 1.0)))
        drawn.append(attempts)
    return drawn


class Simulation:
    """The discrete-event model of one scenario on one service.

    Events, in time order: a call arrives (its first attempt starts), a hedge timer
    ends (the hedger may start a hedge), an attempt answers (the first answer of a
    call wins; the hedger records it and cancels the others).
    """

    def __init__(self, service: Service, scenario: Scenario, calls: int, seed: int) -> None:
        self.clock = Clock()
        options = scenario.options
        self.hedger = None if options is None else Hedger("sim", clock=self.clock, **options)
        self.result = Result(service, scenario, hedger=self.hedger)
        self.drawn = latencies(service, calls, seed)
        self.events: list[tuple[float, int, str, int, int]] = []  # at, order, kind, call, attempt
        self.order = 0
        self.open: dict[int, tuple[HedgedCall | None, float]] = {}  # call: decisions, began

    def push(self, at: float, kind: str, call: int, attempt: int = 0) -> None:
        self.order += 1
        heapq.heappush(self.events, (at, self.order, kind, call, attempt))

    def start(self, call: int, decided: HedgedCall | None) -> None:
        now = self.clock.now
        index = 0 if decided is None else decided.start(now)
        latency = self.drawn[call][index]
        self.result.attempts += 1
        self.result.busy += latency  # the server finishes what it received, cancelled or not
        self.push(now + latency, "done", call, index)
        if decided is not None and decided.worth_waiting(None):
            self.push(now + decided.delay, "hedge", call)

    def run(self, rate: float, seed: int) -> Result:
        arrivals = random.Random(-seed)
        at = 0.0
        for call in range(len(self.drawn)):
            at += arrivals.expovariate(rate)
            self.push(at, "arrive", call)
        while self.events:
            self.clock.now, _, kind, call, index = heapq.heappop(self.events)
            if kind == "arrive":
                decided = None if self.hedger is None else self.hedger.begin()
                self.open[call] = (decided, self.clock.now)
                self.start(call, decided)
                continue
            entry = self.open.get(call)
            if entry is None:  # the call is over: a loser's answer or a timer comes late
                continue
            decided, began = entry
            if kind == "hedge":
                if decided is not None and decided.may_hedge():
                    self.start(call, decided)
            else:  # the first answer wins; the hedger cancels the other attempts
                del self.open[call]
                self.result.latencies.append(self.clock.now - began)
                if decided is not None:
                    decided.succeeded(index, self.clock.now)
                    self.result.hedge_wins += index > 0
        return self.result


def run(calls: int, rate: float, seed: int) -> list[Result]:
    return [
        Simulation(service, scenario, calls, seed).run(rate, seed)
        for service in SERVICES
        for scenario in SCENARIOS
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def table(results: list[Result]) -> str:
    """One Markdown table per service."""
    out = []
    for service in SERVICES:
        rows = [r for r in results if r.service is service]
        base = rows[0]
        calls = len(base.latencies)
        out.append(f"**{service.name.capitalize()}**\n")
        out.append(
            "| | delay at the end | p50 | p90 | p99 | p99.9 | extra requests"
            " | extra service time | hedge won |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            extra = r.attempts / calls - 1
            busy = r.busy / base.busy - 1
            delay = "" if r.hedger is None else ms(r.hedger.current_delay())
            out.append(
                f"| {r.scenario.name} | {delay} | {ms(r.percentile(50))} | {ms(r.percentile(90))}"
                f" | {ms(r.percentile(99))} | {ms(r.percentile(99.9))} | {extra:+.1%}"
                f" | {busy:+.1%} | {r.hedge_wins / calls:.1%} |"
            )
        out.append("")
    return "\n".join(out)


COLOURS = ("#444444", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd")


def svg(results: list[Result]) -> str:
    """The share of calls slower than each latency (log-log), on the first service."""
    rows = [r for r in results if r.service is SERVICES[0]]
    width, height, left, right, top, bottom = 720, 360, 64, 180, 24, 44
    x0, x1 = math.log10(0.01), math.log10(2.0)
    y0, y1 = math.log10(1.0), math.log10(1e-4)

    def x(seconds: float) -> float:
        v = (math.log10(max(seconds, 0.01)) - x0) / (x1 - x0)
        return left + v * (width - left - right)

    def y(share: float) -> float:
        v = (math.log10(max(share, 1e-4)) - y0) / (y1 - y0)
        return top + v * (height - top - bottom)

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
            f' width="{width}" height="{height}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    for share, label in (
        (1, "100 %"),
        (0.1, "10 %"),
        (0.01, "1 %"),
        (1e-3, "0.1 %"),
        (1e-4, "0.01 %"),
    ):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(share):.1f}" y2="{y(share):.1f}"'
            ' stroke="#dddddd"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y(share) + 4:.1f}" text-anchor="end">{label}</text>'
        )
    for seconds in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        parts.append(
            f'<line x1="{x(seconds):.1f}" x2="{x(seconds):.1f}" y1="{top}" y2="{height - bottom}"'
            ' stroke="#eeeeee"/>'
        )
        parts.append(
            f'<text x="{x(seconds):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{ms(seconds)}</text>"
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        "call latency</text>"
    )
    parts.append(
        f'<text x="14" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle"'
        f' transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">calls slower</text>'
    )
    for i, (r, colour) in enumerate(zip(rows, COLOURS, strict=True)):
        ordered = sorted(r.latencies)
        n = len(ordered)
        # shares of calls slower, evenly spaced on the log scale from 100 % to 0.01 %
        slower = sorted({min(max(round(n * 10 ** (-i / 50)), 1), n) for i in range(201)})
        points = [f"{x(ordered[n - k]):.1f},{y(k / n):.1f}" for k in reversed(slower)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"'
            f' points="{" ".join(points)}"/>'
        )
        ly, lx = top + 16 + 20 * i, width - right
        parts.append(
            f'<line x1="{lx + 12}" x2="{lx + 36}" y1="{ly - 4}" y2="{ly - 4}"'
            f' stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 42}" y="{ly}">{r.scenario.name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def describe(calls: int, rate: float, seed: int) -> str:
    return (
        f"{calls:,} calls at {rate:g} a second (seed {seed}); normal attempts about"
        f" {ms(SERVICES[0].median)}, {SERVICES[0].slow_share:.0%} of calls slow"
        f" ({ms(SERVICES[0].slow_min)} to {ms(SERVICES[0].slow_max)})."
    )


BEGIN, END = "<!-- hedging-simulation:begin -->", "<!-- hedging-simulation:end -->"
PLOT = "hedging-tail.svg"


def write_docs(results: list[Result], calls: int, rate: float, seed: int) -> list[Path]:
    """Rewrite the plot, and the tables between the markers of docs/hedging.md."""
    plot = DOCS / "_static" / PLOT
    plot.parent.mkdir(exist_ok=True)
    plot.write_text(svg(results))
    page = DOCS / "hedging.md"
    text = page.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    generated = (
        f"{BEGIN}\n<!-- written by python examples/hedging_simulation.py --write-docs -->\n\n"
        f"{describe(calls, rate, seed)}\n\n{table(results)}\n"
        f"![Share of calls slower than each latency, per scenario](_static/{PLOT})\n\n"
        f"{END}"
    )
    page.write_text(head + generated + tail)
    return [plot, page]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="calls a second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite docs/_static/{PLOT} and the tables in docs/hedging.md",
    )
    args = parser.parse_args(argv)
    results = run(args.calls, args.rate, args.seed)
    print(describe(args.calls, args.rate, args.seed))
    print()
    print(table(results))
    if args.write_docs:
        for path in write_docs(results, args.calls, args.rate, args.seed):
            print(f"wrote {path.relative_to(DOCS.parent)}")


if __name__ == "__main__":
    main()
