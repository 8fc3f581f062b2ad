"""Tests for examples/overload_simulation.py: what its tables claim holds, run after run."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "overload_simulation.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    """The example, imported as a module."""
    spec = importlib.util.spec_from_file_location("overload_simulation", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(sim: Any) -> dict[str, Any]:
    """The four scenarios of a 45-second run, by name."""
    return {result.scenario: result for result in sim.simulate(sim.Model(seconds=45))}


def test_runs_are_deterministic(sim: Any, results: dict[str, Any]) -> None:
    """The same model gives the same figures, scenario by scenario."""
    again = sim.simulate(sim.Model(seconds=45))
    assert [(r.load, r.served, r.succeeded) for r in again] == [
        (r.load, r.served, r.succeeded) for r in results.values()
    ]


def test_unprotected_retries_multiply_and_never_recover(sim: Any, results: dict[str, Any]) -> None:
    """Without protection the load reaches about 27 times the calls and stays high."""
    unprotected = results["no protection"]
    assert 20 < unprotected.peak_amplification() <= 27.5
    assert unprotected.recovery(sim.Model(seconds=45)) is None


def test_budgets_bound_the_load_and_recover(sim: Any, results: dict[str, Any]) -> None:
    """Budgets keep the load a small multiple of the calls, and the service recovers."""
    model = sim.Model(seconds=45)
    budgeted = results["retry budgets"]
    assert budgeted.peak_amplification() < results["no protection"].peak_amplification() / 2
    assert budgeted.recovery(model) == 0
    assert budgeted.refused_retries > 0
    assert budgeted.success_rate() > results["no protection"].success_rate()
    assert budgeted.success_rate() > results["breakers only"].success_rate()


def test_breakers_reject_and_recover(sim: Any, results: dict[str, Any]) -> None:
    """Breakers reject calls while open, and the service recovers with them."""
    model = sim.Model(seconds=45)
    for name in ("breakers only", "both"):
        assert results[name].rejected_by_breakers > 0
        assert results[name].recovery(model) == 0


def test_write_docs_fills_the_markers_and_draws_valid_svg(
    sim: Any, results: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--write-docs replaces only the text between the markers, and the plot is SVG."""
    page = tmp_path / "retry-budget.md"
    page.write_text(f"before\n{sim.BEGIN}\nold\n{sim.END}\nafter\n")
    monkeypatch.setattr(sim, "DOCS", tmp_path)
    monkeypatch.setattr(sim, "sensitivity", lambda model: "sensitivity table\n")
    sim.write_docs(sim.Model(seconds=45), list(results.values()))
    text = page.read_text()
    assert text.startswith(f"before\n{sim.BEGIN}\n")
    assert text.endswith(f"{sim.END}\nafter\n")
    assert "old" not in text
    assert "| no protection |" in text
    root = ET.parse(tmp_path / "_static" / "overload-load.svg").getroot()  # noqa: S314 - ours
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 1 + len(sim.SCENARIOS)  # the capacity, and a line per scenario


def test_main_prints_the_table(sim: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Run as a script, it prints the model and the table."""
    sim.main(["--seconds", "30"])
    out = capsys.readouterr().out
    assert out.startswith("100 calls/s for 30 s")
    assert out.count("\n| ") == 1 + len(sim.SCENARIOS)
