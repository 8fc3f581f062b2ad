"""stalwart's pytest plugin: the ``instant_retries`` fixture.

Loaded through the ``pytest11`` entry point. It imports stalwart only when the
fixture is used, so merely having stalwart installed costs a test run nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def instant_retries() -> Iterator[None]:
    """Make every stalwart retry wait zero seconds for the duration of a test."""
    from stalwart.testing import instant_retries as instant  # noqa: PLC0415

    with instant():
        yield
