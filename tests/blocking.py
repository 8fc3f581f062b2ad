"""Blocking helpers for timeout tests: a wait a timer must cut short, and a thread."""

from __future__ import annotations

import threading
from typing import Any

BLOCK_FOR = 5.0  # far longer than any limit under test; a timed-out wait ends well before


def block() -> None:
    """Wait far longer than any limit, interruptibly (SIGALRM ends the wait)."""
    threading.Event().wait(BLOCK_FOR)


def run_in_thread(fn: Any) -> Any:
    """Run `fn` in a new thread (not the main one); return its value or raise its error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(BLOCK_FOR * 2)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
