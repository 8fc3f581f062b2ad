"""A resilient Celery task: retried, failed or dead-lettered as stalwart judges each error.

Run it with ``python examples/celery_tasks.py``. It needs no broker: Celery's
in-memory transport and result store, and a worker in a thread of this process.

Three calls of one task that reaches a flaky "ticketing" service:

- the service refuses two connections, then answers: retried twice, with the countdowns
  of the task's retry policy, then a success;
- the service says 404: a permanent failure, no retry;
- the message lacks a field the task needs (a ``KeyError``): a poison pill, sent to the
  dead-letter queue at once, where it can be listed and replayed after a fix.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_retry

import stalwart
from stalwart.contrib.celery import (
    ResilientTask,
    configure_dead_letters,
    dead_letters,
    task_status,
)

logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="    [log] %(message)s")
logging.getLogger("celery").setLevel(logging.CRITICAL)  # its traceback of the 404: quiet here

app = Celery("example", broker="memory://", backend="cache+memory://", set_as_current=False)
app.conf.update(result_extended=True, worker_hijack_root_logger=False)
configure_dead_letters(app)

POLICY = stalwart.retry(
    attempts=4, backoff=stalwart.exponential(initial=0.2, max=2.0, jitter="none"), log=False
)
refusals = {"count": 0}


@app.task(base=ResilientTask, bind=True, name="tickets.create", retry_with=POLICY)
def create_ticket(self: Any, incident: dict[str, Any]) -> str:
    """Open a ticket for `incident` in a flaky ticketing service."""
    summary = incident["summary"]  # a message without it can never succeed
    if incident.get("missing"):
        raise stalwart.PermanentError("no such queue", status_code=404)
    if refusals["count"] < 2:
        refusals["count"] += 1
        print(f"    attempt {self.request.retries + 1}: connection refused")
        raise ConnectionError("connection refused")
    print(f"    attempt {self.request.retries + 1}: created")
    return f"TICKET-1 ({summary})"


@task_retry.connect
def show_countdown(reason: Any = None, **_: Any) -> None:
    """Print each retry's countdown, as Celery schedules it."""
    print(f"    retry scheduled: {reason}")


def wait(result: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Poll the task's status until it is final (a web app would answer 202 meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        status = task_status(result.id, app=app)
        if status["ready"] or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.05)


def main() -> int:
    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        print("1. A flaky service: retried as the policy says, then a success")
        with stalwart.correlation_id("req-42"):
            ok = wait(create_ticket.delay({"summary": "disk full"}))
        print(f"   status {ok['status']}, result {ok['result']!r}, retries {ok['retries']}")

        print("\n2. A permanent error (404): no retry")
        failed = wait(create_ticket.delay({"summary": "x", "missing": True}))
        print(f"   status {failed['status']}, error {failed['error']} (never its message)")

        print("\n3. A poison pill (no 'summary'): to the dead-letter queue, not retried")
        poisoned = wait(create_ticket.delay({"title": "wrong shape"}))
        print(f"   status {poisoned['status']}, dead-lettered: {poisoned['dead_lettered']}")
        letters = dead_letters(app)
        for letter in letters:
            print(f"   in the DLQ: {letter.task} {letter.reason} ({letter.exception_type})")

    checks = [
        ok["status"] == "SUCCESS" and ok["retries"] == 2 and ok["correlation_id"] == "req-42",
        failed["status"] == "FAILURE" and failed["error"] == "stalwart.PermanentError",
        poisoned["dead_lettered"] is not None and len(letters) == 1,
    ]
    if not all(checks):
        print(f"\nunexpected outcome: {checks}")
        return 1
    print("\nEvery call ended as stalwart judged it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
