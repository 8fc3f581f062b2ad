"""What stalwart's entry points and its failure path import, each in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    """Run `code` in a fresh interpreter; return the top-level modules then loaded."""
    probe = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


FAILING_TWICE = """
import stalwart
from stalwart.testing import instant_retries

calls = 0

@stalwart.retry(attempts=3)
def flaky():
    global calls
    calls += 1
    if calls < 3:
        raise ConnectionError(calls)
    return calls

with instant_retries():
    assert flaky() == 3

@stalwart.retry(attempts=2, backoff=stalwart.decorrelated())
def down():
    raise ConnectionError

with instant_retries():
    try:
        down()
    except ConnectionError as exc:
        assert "gave up" in exc.__notes__[0]
"""


def test_retries_with_stalwart_strategies_never_import_tenacity() -> None:
    """Retrying and giving up with stalwart's own wait strategies loads no tenacity."""
    assert "tenacity" not in loaded_after(FAILING_TWICE)


def test_a_tenacity_strategy_loads_tenacity_on_failure() -> None:
    """A tenacity wait strategy gets tenacity's engine once a call fails."""
    code = """
import stalwart, tenacity
from stalwart.testing import instant_retries

@stalwart.retry(attempts=2, backoff=tenacity.wait_fixed(0))
def down():
    raise ConnectionError

with instant_retries():
    try:
        down()
    except ConnectionError:
        pass
"""
    assert "tenacity" in loaded_after(code)


@pytest.mark.parametrize("module", ["stalwart.breaker", "stalwart.contrib.httpx"])
def test_entry_points_do_not_import_tenacity(module: str) -> None:
    """Importing the breaker or the httpx transport loads no tenacity."""
    pytest.importorskip("httpx")
    assert "tenacity" not in loaded_after(f"import {module}")


def test_the_breaker_does_not_import_dataclasses() -> None:
    """The breaker's records are made without `dataclasses` (and its `inspect`, `ast`, `dis`)."""
    loaded = loaded_after("import stalwart.breaker")
    assert "stalwart" in loaded
    assert loaded.isdisjoint({"dataclasses", "inspect", "ast", "dis"}), loaded
