"""A retry storm, and what circuit breakers and retry budgets do about it.

A service serves 150 requests a second; for a while its capacity drops to 30. It is
called through three layers (an edge, an API, a backend), each retrying its call to the
next 3 times in all, so one request can reach the service 3 x 3 x 3 = 27 times. Every
request the service receives costs it a little work (parsing, queueing, a timeout),
served or not, so a flood of retries eats the capacity that would serve them: after the
capacity comes back, the retries can hold the service down by themselves.

Four scenarios, the same seeded traffic:

- no protection: each layer retries every failure;
- breakers only: each layer calls the next through a `CircuitBreaker`;
- retry budgets: each layer's retries draw on a `RetryBudget` (Finagle's defaults:
  20 % of first attempts, plus 10 a second);
- both.

The objects are the real ones: breakers on a `ManualClock`, budgets on the same clock,
driven in discrete steps of 0.1 s (nothing sleeps, nothing runs in threads). Printed:
the peak load on the service as a multiple of the incoming calls, the time to recover
once the capacity is back, and the share of calls that succeeded.

Run: ``python examples/overload_simulation.py`` (add ``--seconds``, ``--seed``, ...;
``--write-docs`` rewrites the tables and the SVG plot in docs/).
"""

from __future__ import annotations

import argparse
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from stalwart.breaker import CircuitBreaker
from stalwart.budget import RetryBudget
from stalwart.errors import CircuitOpenError
from stalwart.testing import ManualClock

TICK = 0.1
"""Seconds per step of the model."""
LAYERS = 3
"""Layers between the caller and the service, each retrying its call to the next."""
ATTEMPTS = 3
"""Attempts each layer makes (the first and 2 retries)."""
SCENARIOS = ("no protection", "breakers only", "retry budgets", "both")

DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass(frozen=True)
class Model:
    """The service, its traffic and its trouble."""

    seconds: float = 60.0
    calls_per_second: int = 100
    capacity: float = 150.0
    """Requests a second the service can serve when healthy."""
    degraded: float = 30.0
    """...and while degraded."""
    degraded_from: float = 10.0
    degraded_until: float = 25.0
    overhead: float = 0.05
    """Capacity each request received costs, served or not (a share of one request)."""
    seed: int = 1


@dataclass
class Frame:
    """One layer's invocation of the layer below (or, for the last, of the service)."""

    layer: int
    attempt: int = 1
    token: int | None = None


@dataclass
class Call:
    """A request from outside, and the invocations it has open, outermost first."""

    started: int
    stack: list[Frame] = field(default_factory=list)


@dataclass
class Result:
    """What one scenario did, per step and in total."""

    scenario: str
    load: list[int]
    """Requests the service received, per step."""
    served: list[int]
    arrivals: list[int]
    succeeded: int = 0
    failed: int = 0
    refused_retries: int = 0
    rejected_by_breakers: int = 0

    def per_second(self, values: list[int]) -> list[int]:
        per = round(1 / TICK)
        return [sum(values[i : i + per]) for i in range(0, len(values), per)]

    def peak_amplification(self) -> float:
        """The most requests the service received in a second, per incoming call."""
        load, arrivals = self.per_second(self.load), self.per_second(self.arrivals)
        return max(received / calls for received, calls in zip(load, arrivals, strict=True))

    def recovery(self, model: Model) -> float | None:
        """Seconds from the capacity's return until every later second is healthy.

        Healthy: the service received at most 1.5 requests per incoming call, and
        served at least 95 % of them. ``None`` if that never held to the end.
        """
        load = self.per_second(self.load)
        served = self.per_second(self.served)
        arrivals = self.per_second(self.arrivals)
        back = round(model.degraded_until)
        healthy_from = None
        for second in range(back, len(load)):
            healthy = (
                load[second] <= 1.5 * arrivals[second] and served[second] >= 0.95 * load[second]
            )
            if not healthy:
                healthy_from = None
            elif healthy_from is None:
                healthy_from = second
        return None if healthy_from is None else float(healthy_from - back)

    def success_rate(self) -> float:
        done = self.succeeded + self.failed
        return self.succeeded / done if done else 1.0


class Simulation:
    """One scenario: the layers' breakers and budgets, the calls in flight, the service."""

    def __init__(self, model: Model, scenario: str) -> None:
        self.model = model
        self.clock = ManualClock()
        self.rng = random.Random(f"{model.seed}")  # the same draws in every scenario
        breakers = scenario in {"breakers only", "both"}
        budgets = scenario in {"retry budgets", "both"}
        self.breakers = [
            CircuitBreaker(
                f"layer-{layer}",
                failure_threshold=None,
                failure_rate=0.5,
                minimum_calls=20,
                window=5.0,
                recovery_timeout=2.0,
                clock=self.clock,
                log=False,
                registry=None,
            )
            if breakers
            else None
            for layer in range(LAYERS)
        ]
        self.budgets = [
            RetryBudget(f"layer-{layer}", clock=self.clock) if budgets else None
            for layer in range(LAYERS)
        ]
        steps = round(model.seconds / TICK)
        self.due: dict[int, list[Call]] = defaultdict(list)
        self.result = Result(scenario, [0] * steps, [0] * steps, [0] * steps)

    def capacity(self, step: int) -> float:
        """Requests the service can serve in `step`."""
        model, now = self.model, step * TICK
        degraded = model.degraded_from <= now < model.degraded_until
        return (model.degraded if degraded else model.capacity) * TICK

    def run(self) -> Result:
        model = self.model
        per_step = model.calls_per_second * TICK
        owed = 0.0
        for step in range(len(self.result.load)):
            owed += per_step
            arrivals = int(owed)
            owed -= arrivals
            self.result.arrivals[step] = arrivals
            for _ in range(arrivals):
                call = Call(step)
                self.invoke(call, 0)
                self.due[step].append(call)
            at_service: list[Call] = []
            for call in self.due.pop(step, []):
                self.attempt(call, step, at_service)
            self.serve(at_service, step)
            self.clock.advance(TICK)
        return self.result

    def invoke(self, call: Call, layer: int) -> None:
        """Open `layer`'s invocation of the layer below: its first attempt, deposited."""
        call.stack.append(Frame(layer))
        budget = self.budgets[layer]
        if budget is not None:
            budget.deposit()

    def attempt(self, call: Call, step: int, at_service: list[Call]) -> None:
        """Make the innermost invocation's attempt: down the layers, to the service."""
        while True:
            frame = call.stack[-1]
            breaker = self.breakers[frame.layer]
            if breaker is not None:
                try:
                    frame.token = breaker.admit()
                except CircuitOpenError:
                    # Not retried (a retry does not retry CircuitOpenError): this
                    # invocation fails at once, and the layer above sees an error.
                    self.result.rejected_by_breakers += 1
                    call.stack.pop()
                    self.fail(call, step)
                    return
            if frame.layer == LAYERS - 1:
                at_service.append(call)
                return
            self.invoke(call, frame.layer + 1)

    def serve(self, at_service: list[Call], step: int) -> None:
        """The service answers this step's requests: as many as its capacity allows."""
        load = len(at_service)
        self.result.load[step] = load
        room = max(0.0, self.capacity(step) - self.model.overhead * load)
        served = min(load, int(room) + (self.rng.random() < room % 1))
        lucky = set(self.rng.sample(range(load), served))
        self.result.served[step] = served
        for index, call in enumerate(at_service):
            if index in lucky:
                self.succeed(call, step)
            else:
                self.fail(call, step)

    def succeed(self, call: Call, step: int) -> None:
        """The service answered: every open invocation succeeds, innermost first."""
        while call.stack:
            frame = call.stack.pop()
            breaker = self.breakers[frame.layer]
            if breaker is not None and frame.token is not None:
                breaker.record_success(frame.token)
        del step
        self.result.succeeded += 1

    def fail(self, call: Call, step: int) -> None:
        """The innermost invocation's attempt failed: retry it, or fail it upwards."""
        while call.stack:
            frame = call.stack[-1]
            breaker = self.breakers[frame.layer]
            if breaker is not None and frame.token is not None:
                breaker.record_failure(frame.token, "unavailable")
                frame.token = None
            if frame.attempt < ATTEMPTS:
                budget = self.budgets[frame.layer]
                if budget is None or budget.withdraw():
                    frame.attempt += 1
                    # Exponential backoff with full jitter: 0.1-0.2 s, then 0.1-0.4 s.
                    wait = self.rng.randint(1, 2 ** (frame.attempt - 1))
                    self.due[step + wait].append(call)
                    return
                self.result.refused_retries += 1
            call.stack.pop()
        self.result.failed += 1


def simulate(model: Model) -> list[Result]:
    return [Simulation(model, scenario).run() for scenario in SCENARIOS]


def table(model: Model, results: list[Result]) -> str:
    """The Markdown table of the scenarios' figures."""
    lines = [
        (
            "| scenario | peak load (x calls, 1 s) | load while degraded (x calls)"
            " | recovery once capacity is back | calls succeeded | retries refused by budgets"
            " | calls rejected by breakers |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    first, last = round(model.degraded_from / TICK), round(model.degraded_until / TICK)
    for result in results:
        recovery = result.recovery(model)
        recovered = (
            f"not within {model.seconds - model.degraded_until:g} s"
            if recovery is None
            else f"{recovery:g} s"
        )
        degraded = sum(result.load[first:last]) / sum(result.arrivals[first:last])
        lines.append(
            f"| {result.scenario} | {result.peak_amplification():.1f}x | {degraded:.2f}x"
            f" | {recovered} | {result.success_rate():.1%}"
            f" | {result.refused_retries:,} | {result.rejected_by_breakers:,} |"
        )
    return "\n".join(lines) + "\n"


def describe(model: Model) -> str:
    return (
        f"{model.calls_per_second} calls/s for {model.seconds:g} s; the service serves"
        f" {model.capacity:g} requests/s, {model.degraded:g} from"
        f" {model.degraded_from:g} s to {model.degraded_until:g} s; each request costs it"
        f" {model.overhead:g} of a request's work whether served or not;"
        f" {LAYERS} layers x {ATTEMPTS} attempts; seed {model.seed}."
    )


COLOURS = {
    "no protection": "#d62728",
    "breakers only": "#ff7f0e",
    "retry budgets": "#1f77b4",
    "both": "#2ca02c",
}


def svg(model: Model, results: list[Result]) -> str:
    """Requests per second at the service over time, one line per scenario."""
    width, height = 720, 360
    left, right, top, bottom = 64, 170, 24, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    series = {result.scenario: result.per_second(result.load) for result in results}
    seconds = len(next(iter(series.values())))
    peak = max(max(values) for values in series.values())
    # A log scale: 27 times the calls and a fraction of them fit on one plot.
    low, high = 10.0, 10.0 ** math.ceil(math.log10(max(peak, 100)))

    def x(second: float) -> float:
        return left + plot_w * second / seconds

    def y(value: float) -> float:
        share = (math.log10(max(value, low)) - math.log10(low)) / math.log10(high / low)
        return top + plot_h * (1 - share)

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
            f' width="{width}" height="{height}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        (
            f'<rect x="{x(model.degraded_from):.1f}" y="{top}"'
            f' width="{x(model.degraded_until) - x(model.degraded_from):.1f}" height="{plot_h}"'
            ' fill="#eeeeee"/>'
        ),
        (
            f'<text x="{(x(model.degraded_from) + x(model.degraded_until)) / 2:.1f}"'
            f' y="{top + 14}" text-anchor="middle" fill="#555">capacity down</text>'
        ),
    ]
    gridlines = [m * 10**e for e in range(1, round(math.log10(high)) + 1) for m in (1, 2, 5)]
    for value in (v for v in gridlines if v <= high):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"'
            f' stroke="{"#cccccc" if str(value).startswith("1") else "#eeeeee"}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,}</text>'
        )
    parts.extend(
        f'<text x="{x(second):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{second}</text>'
        for second in range(0, seconds + 1, 10)
    )
    parts += [
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">seconds</text>',
        (
            f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)"'
            ' text-anchor="middle">requests/s at the service (log scale)</text>'
        ),
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="black"/>',
        (
            f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"'
            ' stroke="black"/>'
        ),
    ]
    capacity = [
        (0, model.capacity),
        (model.degraded_from, model.capacity),
        (model.degraded_from, model.degraded),
        (model.degraded_until, model.degraded),
        (model.degraded_until, model.capacity),
        (seconds, model.capacity),
    ]
    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in capacity)
    parts.append(
        f'<polyline points="{points}" fill="none" stroke="black" stroke-dasharray="4 3"/>'
    )
    legend = [*series, "capacity"]
    for index, name in enumerate(legend):
        ly = top + 10 + 20 * index
        colour = COLOURS.get(name, "black")
        dash = ' stroke-dasharray="4 3"' if name == "capacity" else ""
        parts.append(
            f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 36}" y1="{ly}" y2="{ly}"'
            f' stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{left + plot_w + 42}" y="{ly + 4}">{name}</text>'
        )
    for name, values in series.items():
        points = " ".join(f"{x(s + 0.5):.1f},{y(v):.1f}" for s, v in enumerate(values))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{COLOURS[name]}" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def sensitivity(model: Model) -> str:
    """Recovery and calls succeeded per scenario, for a few costs of a request received."""
    lines = [
        "| cost of a request received | " + " | ".join(SCENARIOS) + " |",
        "|---|" + "---:|" * len(SCENARIOS),
    ]
    for overhead in (0.0, 0.02, 0.05, 0.1):
        varied = replace(model, overhead=overhead)
        cells = []
        for result in simulate(varied):
            recovery = result.recovery(varied)
            recovered = "never" if recovery is None else f"{recovery:g} s"
            cells.append(f"{recovered}, {result.success_rate():.0%}")
        lines.append(f"| {overhead:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- overload-simulation:begin -->", "<!-- overload-simulation:end -->"


def write_docs(model: Model, results: list[Result]) -> list[Path]:
    """Rewrite the plot, and the tables between the markers of docs/retry-budget.md."""
    plot = DOCS / "_static" / "overload-load.svg"
    plot.parent.mkdir(exist_ok=True)
    plot.write_text(svg(model, results))
    page = DOCS / "retry-budget.md"
    text = page.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    generated = (
        f"{BEGIN}\n<!-- written by python examples/overload_simulation.py --write-docs -->\n\n"
        f"{describe(model)}\n\n{table(model, results)}\n"
        "![Requests per second at the service, per scenario](_static/overload-load.svg)\n\n"
        "Seconds in which the service received nothing (every breaker open) sit on the"
        " bottom line of the plot.\n\n"
        "Recovery time and calls succeeded as the cost of each request received varies"
        " (the rest as above):\n\n"
        f"{sensitivity(model)}{END}"
    )
    page.write_text(head + generated + tail)
    return [plot, page]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=Model.seconds)
    parser.add_argument("--calls-per-second", type=int, default=Model.calls_per_second)
    parser.add_argument("--overhead", type=float, default=Model.overhead)
    parser.add_argument("--seed", type=int, default=Model.seed)
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite docs/_static/overload-load.svg and the tables in docs/retry-budget.md",
    )
    args = parser.parse_args(argv)
    model = Model(
        seconds=args.seconds,
        calls_per_second=args.calls_per_second,
        overhead=args.overhead,
        seed=args.seed,
    )
    results = simulate(model)
    print(describe(model))
    print()
    print(table(model, results), end="")
    if args.write_docs:
        for path in write_docs(model, results):
            print(f"wrote {path.relative_to(DOCS.parent)}")


if __name__ == "__main__":
    main()
