"""The tutorial's code (examples/getting_started.py) and the tests it shows (docs/tutorial.md).

The tests after `test_the_example_runs_every_step` are the ones the tutorial's last step
shows, as a user would write them: stalwart's pytest fixtures and an httpx mock.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

httpx = pytest.importorskip("httpx")

import stalwart  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module, without putting examples/ on sys.path."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tutorial = _load_example("getting_started")
get_order = _tutorial.get_order
resilient_client = _tutorial.resilient_client


def test_the_example_runs_every_step() -> None:
    """The example exits 0 and prints what the tutorial says it prints, step by step."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "getting_started.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    for expected in (
        "order 1: {'id': '1', 'status': 'shipped'}",
        "order 2: {'id': '2', 'status': 'shipped'}",
        "order 3: 503; the shop got 1 request",
        "requests the shop got for order 4: 0",
        "order 5: {'id': '5', 'status': 'shipped'}",
        "health: healthy",
    ):
        assert expected in lines, f"{expected!r} not in:\n{completed.stdout}"
    assert any(line.startswith("order 4: HttpxCircuitOpenError: circuit ") for line in lines)
    assert any(line.startswith("health: {'status': 'critical'") for line in lines)


# The tests the tutorial shows ------------------------------------------------------


def shop(statuses: list[int], seen: list[httpx.Request]) -> httpx.MockTransport:
    """A stand-in for the shop: answers with `statuses` in turn, then 200 with an order."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses.pop(0) if statuses else 200
        return httpx.Response(status, json={"id": "7", "status": "shipped"})

    return httpx.MockTransport(answer)


def test_a_503_is_retried(instant_retries: None, fresh_breakers: stalwart.BreakerRegistry) -> None:
    """Two 503s, then the order: the caller sees only the order."""
    seen: list[httpx.Request] = []
    with resilient_client("https://shop.test", shop([503, 503], seen)) as client:
        assert get_order(client, 7) == {"id": "7", "status": "shipped"}
    assert len(seen) == 3


def test_an_outage_opens_the_breaker(
    instant_retries: None, fresh_breakers: stalwart.BreakerRegistry
) -> None:
    """Three 503s open the shop's breaker: the next call fails at once, unsent."""
    seen: list[httpx.Request] = []
    with resilient_client("https://shop.test", shop([503] * 3, seen)) as client:
        with pytest.raises(httpx.HTTPStatusError):
            get_order(client, 7)
        with pytest.raises(stalwart.CircuitOpenError):
            get_order(client, 8)
    assert len(seen) == 3
    assert fresh_breakers.health().open == ("http:shop.test",)


def test_each_test_starts_with_closed_breakers(fresh_breakers: stalwart.BreakerRegistry) -> None:
    """The breaker the outage above opened is closed again here."""
    assert fresh_breakers.health().status == "healthy"
