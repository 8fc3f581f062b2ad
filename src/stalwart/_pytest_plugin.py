"""stalwart's pytest plugin: the ``instant_retries`` and ``fresh_breakers`` fixtures.

Loaded through the ``pytest11`` entry point. It imports stalwart only when a
fixture is used, so merely having stalwart installed costs a test run nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stalwart.breaker import BreakerRegistry


@pytest.fixture
def instant_retries() -> Iterator[None]:
    """Make every stalwart retry wait zero seconds for the duration of a test."""
    from stalwart.testing import instant_retries as instant  # noqa: PLC0415

    with instant():
        yield


@pytest.fixture
def fresh_breakers() -> Iterator[BreakerRegistry]:
    """Fresh state for every breaker of the default registry during a test; restored after.

    Yields the default registry; see `stalwart.testing.fresh_breakers`.
    """
    from stalwart.testing import fresh_breakers as fresh  # noqa: PLC0415

    with fresh() as registry:
        yield registry
