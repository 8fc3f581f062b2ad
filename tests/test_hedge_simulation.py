"""The tail-latency simulation (examples/hedging_simulation.py) in a small, seeded run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hedging_simulation.py"
CALLS = 3000


@pytest.fixture(scope="module")
def simulation() -> ModuleType:
    """The example, imported as a module."""
    spec = importlib.util.spec_from_file_location("hedging_simulation", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(simulation: ModuleType) -> dict[tuple[str, str], Any]:
    """Every scenario on every service, keyed by (service, scenario) names."""
    return {
        (r.service.name, r.scenario.name): r
        for r in simulation.run(calls=CALLS, rate=100.0, seed=3)
    }


def test_it_is_deterministic(simulation: ModuleType) -> None:
    """The same seed gives the same tables."""
    first = simulation.table(simulation.run(calls=500, rate=100.0, seed=7))
    assert first == simulation.table(simulation.run(calls=500, rate=100.0, seed=7))
    assert first != simulation.table(simulation.run(calls=500, rate=100.0, seed=8))


def test_hedging_cuts_the_tail_for_a_few_percent_more_requests(
    simulation: ModuleType, results: dict[tuple[str, str], Any]
) -> None:
    """When slowness is bad luck, a p95 hedger brings p99 near the delay at ~5 % load."""
    luck = simulation.SERVICES[0].name
    plain = results[(luck, "no hedging")]
    hedged = results[(luck, "p95")]
    assert plain.percentile(99) > 0.2
    assert hedged.percentile(99) < 0.15
    assert hedged.percentile(50) == pytest.approx(plain.percentile(50), rel=0.05)
    extra = hedged.attempts / CALLS - 1
    assert 0.02 < extra < 0.10
    assert plain.attempts == CALLS


def test_a_second_hedge_helps_the_far_tail(
    simulation: ModuleType, results: dict[tuple[str, str], Any]
) -> None:
    """Two hedges cut the p99.9 that one hedge leaves (a hedge slow as well)."""
    luck = simulation.SERVICES[0].name
    one = results[(luck, "p95")]
    two = results[(luck, "p95, 2 hedges")]
    assert two.percentile(99.9) < one.percentile(99.9)


def test_hedging_requests_slow_by_nature_costs_service_time(
    simulation: ModuleType, results: dict[tuple[str, str], Any]
) -> None:
    """When every copy of a slow request is slow, hedges add far more service time."""
    luck, nature = (service.name for service in simulation.SERVICES)
    for scenario in ("fixed 50 ms", "p95"):
        base_luck = results[(luck, "no hedging")]
        base_nature = results[(nature, "no hedging")]
        cost_luck = results[(luck, scenario)].busy / base_luck.busy - 1
        cost_nature = results[(nature, scenario)].busy / base_nature.busy - 1
        assert cost_nature > 2 * cost_luck


def test_the_plot_is_an_svg(simulation: ModuleType) -> None:
    """The plot is a well-formed SVG with one line per scenario."""
    from xml.etree import ElementTree as ET

    svg = simulation.svg(simulation.run(calls=300, rate=100.0, seed=1))
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == len(simulation.SCENARIOS)
