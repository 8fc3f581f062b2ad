"""Nothing is lost: 1,000 messages through real workers, one killed mid-run, all accounted.

The messages are of one `ResilientTask` (`celery_accounting_app`), each deciding its own
outcome from its arguments, in a seeded mix; a few raw invalid-JSON messages go among
them. A `celery worker` subprocess on RabbitMQ runs them (results in Redis, redeliveries
counted by a `RedeliveryTracker` in Redis), is SIGKILLed once mid-run, and a new one
finishes the work. Then every message must be found exactly where its plan says.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from kombu import Exchange, Queue

import celery_accounting_app
from celery_support import flush_garbage
from redis_support import URL, delete_prefix, new_prefix
from stalwart.contrib.celery import dead_letters, task_status
from stalwart.contrib.celery.dead_letter import dead_letter_queue_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from celery import Celery
    from kombu.message import Message

    from stalwart.contrib.celery import DeadLetter, TaskStatus

TESTS = Path(__file__).parent
SEED = 20240513
MESSAGES = 1000
RAW = 8
KILL_AFTER = 300
"""Final results before the first worker is killed."""
DEADLINE = 120.0
"""Seconds, from the first publish, for every message to be accounted for."""
ATTEMPTS = celery_accounting_app.ATTEMPTS

# What each kind of message must end as: (status, dead-letter reason, exception type:
# the result's error, or for a dead letter the one that sent it there).
EXPECTED = {
    "success": ("SUCCESS", None, None),
    "transient": ("SUCCESS", None, None),
    "exhausted": ("FAILURE", "max_retries_exceeded", "stalwart.TransientError"),
    "permanent": ("FAILURE", None, "stalwart.PermanentError"),
    "poison": ("FAILURE", "poison_pill", "builtins.KeyError"),
}
LABELS = {
    "success": "success (no retry)",
    "transient": "transient, succeeds after k retries",
    "exhausted": "transient forever -> DLQ max_retries_exceeded",
    "permanent": "permanent -> FAILURE, no retry",
    "poison": "poison pill (KeyError) -> DLQ poison_pill",
    "raw": "raw invalid JSON -> DLQ poison_pill",
    "other": "anything else (lost, stale, wrong state)",
}


def make_plan(seed: int) -> list[tuple[str, int]]:
    """The seeded mix: (kind, k) per message, k the retries a transient one needs."""
    rng = random.Random(seed)
    kinds = ["success", "transient", "exhausted", "permanent", "poison"]
    weights = [45, 25, 10, 10, 10]
    plan = []
    for _ in range(MESSAGES):
        kind = rng.choices(kinds, weights)[0]
        plan.append((kind, rng.randint(1, ATTEMPTS - 1) if kind == "transient" else 0))
    return plan


def expected_retries(kind: str, k: int) -> int:
    """The retry a message ends on: its k, the policy's last, or none."""
    return {"transient": k, "exhausted": ATTEMPTS - 1}.get(kind, 0)


def bucket(status: TaskStatus) -> str:
    """The outcome a task's final status shows, judged from the status alone."""
    dead = status["dead_lettered"]
    for kind, (state, reason, error) in EXPECTED.items():
        if kind == "transient":
            continue  # told from success by its retries, below
        if (status["status"], dead and dead["reason"], status["error"]) == (
            state,
            reason,
            error if reason is None else "stalwart.contrib.celery.DeadLettered",
        ):
            if kind == "success" and status["retries"]:
                return "transient"
            return kind
    return "other"


# --- the app, its worker processes, the broker --------------------------------------


@contextlib.contextmanager
def accounting_app() -> Iterator[tuple[Celery, str, redis.Redis]]:
    """The app on a queue of its own; queues, results and tracker keys deleted after."""
    queue = f"stalwart-accounting-{uuid.uuid4().hex[:12]}"
    prefix = new_prefix()
    app = celery_accounting_app.build(queue, prefix)
    client = redis.Redis.from_url(URL)
    dlq = dead_letter_queue_name(app)
    try:
        with app.connection_for_write() as connection:
            channel: Any = connection.default_channel
            app.amqp.queues[queue](channel).declare()
            Queue(dlq, Exchange(""), routing_key=dlq, durable=True)(channel).declare()
        yield app, prefix, client
    finally:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            channel.queue_delete(queue)
            channel.queue_delete(dlq)
            # The work queue's exchange, and the workers' control exchanges.
            for exchange in (queue, f"{queue}.pidbox", f"reply.{queue}.pidbox"):
                channel.exchange_delete(exchange)
        delete_prefix(client, prefix)
        results = redis.Redis.from_url(celery_accounting_app.BACKEND_URL)
        try:
            keys = list(results.scan_iter(match=f"{queue}:*", count=1000))
            if keys:
                results.delete(*keys)
        finally:
            results.close()
        client.close()
        backend: Any = app.backend
        backend.client.close()
        app.close()
        flush_garbage()


class Workers:
    """`celery worker` subprocesses of the app, each in a process group of its own
    (the worker and its pool), which is what is killed."""

    def __init__(self, app: Celery, prefix: str, log: Path) -> None:
        self.log = log
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            celery_accounting_app.QUEUE_ENV: app.main,
            celery_accounting_app.PREFIX_ENV: prefix,
        }
        self.queue = app.main
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        # prefork, not solo: a solo worker runs retries' ETA messages about 0.1 s
        # apart (Celery's timer), which makes ~750 retries take over a minute.
        command = [
            *(sys.executable, "-m", "celery", "-A", "celery_accounting_app", "worker"),
            *("--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"),
            *("-Q", self.queue, "-n", f"accounting-{uuid.uuid4().hex[:8]}@%h"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ]
        with self.log.open("ab") as output:
            process = subprocess.Popen(
                command,
                cwd=TESTS,
                env=self.env,
                stdout=output,
                stderr=output,
                start_new_session=True,  # its own process group: the pool dies with it
            )
        self.started.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool processes at once, as a lost host would."""
        if process.poll() is None:  # its group, while the id is surely still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """A warm shutdown (its connection closed cleanly, unacknowledged messages back
        in the queue); SIGKILL if it takes longer than 10 s."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(process)

    def close(self) -> None:
        for process in self.started:
            self.kill(process)

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])


def ready_count(app: Celery, name: str) -> int:
    """Messages ready in queue `name` (not those a consumer holds unacknowledged)."""
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        declared = channel.queue_declare(name, passive=True)
        return int(declared[1])


def final_count(app: Celery, ids: list[str]) -> tuple[int, bool]:
    """How many of `ids` are SUCCESS or FAILURE in the backend, and whether all are."""
    backend: Any = app.backend
    payloads = backend.client.mget([backend.get_key_for_task(i) for i in ids])
    done = sum(
        1
        for payload in payloads
        if payload is not None and json.loads(payload)["status"] in {"SUCCESS", "FAILURE"}
    )
    return done, done == len(ids)


def raw_bodies(app: Celery) -> Counter[bytes]:
    """The bodies of the DLQ's messages that name no task, each put back after."""
    name = dead_letter_queue_name(app)
    with app.connection_for_write() as connection:
        channel: Any = connection.channel()
        try:
            queue = Queue(name, Exchange(""), routing_key=name, durable=True)(channel)
            taken: list[Message] = []
            while (message := queue.get(no_ack=False)) is not None:
                taken.append(message)
            bodies = Counter(
                m.body if isinstance(m.body, bytes) else str(m.body).encode()
                for m in taken
                if "id" not in (m.headers or {})
            )
            for message in taken:
                message.requeue()
        finally:
            channel.close()
    return bodies


def wait(condition: Any, deadline: float, what: Any, workers: Workers) -> None:
    """Poll `condition` (every 50 ms) until it holds, or fail at `deadline` with `what()`."""
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what()} within {DEADLINE:.0f} s; worker log:\n{workers.tail()}")
        time.sleep(0.05)


# --- the proof ------------------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_nothing_is_lost_when_a_worker_is_killed_mid_run(tmp_path: Path) -> None:
    """1,000 seeded messages and raw poison, a worker SIGKILLed mid-run: all end as planned."""
    plan = make_plan(SEED)
    rng = random.Random(SEED + 1)
    raw = [f'{{"raw": {n}, not json'.encode() for n in range(RAW)]
    raw_at = dict(zip(sorted(rng.sample(range(MESSAGES), RAW)), raw, strict=True))
    started_at = time.monotonic()
    deadline = started_at + DEADLINE
    with accounting_app() as (app, prefix, client):
        work = app.tasks[f"{app.main}.work"]
        workers = Workers(app, prefix, tmp_path / "workers.log")
        queue = app.conf.task_default_queue
        try:
            # Publish everything first: the worker then runs from a full queue.
            ids: list[str] = []
            with app.producer_or_acquire() as producer:
                for index, (kind, k) in enumerate(plan):
                    if index in raw_at:
                        producer.publish(
                            raw_at[index],
                            exchange="",
                            routing_key=queue,
                            content_type="application/json",
                            content_encoding="utf-8",
                            headers={},
                        )
                    ids.append(work.apply_async((kind, k), producer=producer).id)

            first = workers.start()
            wait(
                lambda: final_count(app, ids)[0] >= KILL_AFTER,
                deadline,
                lambda: f"{KILL_AFTER} results were not final",
                workers,
            )
            killed_at = final_count(app, ids)[0]
            workers.kill(first)
            assert first.returncode == -signal.SIGKILL

            # A new worker finishes the work. Once every result is final and nothing is
            # ready, it is stopped (warmly): what it still held goes back to the queue,
            # and an empty queue then means nothing is left in flight anywhere (a dead
            # letter is published before its task's result is stored). Else, again.
            restarts = 0
            while True:
                restarts += 1
                assert restarts <= 3, f"work still left after 3 workers:\n{workers.tail()}"
                second = workers.start()
                wait(
                    lambda: final_count(app, ids)[1] and ready_count(app, queue) == 0,
                    deadline,
                    lambda: (
                        "not every message was accounted for: final results"
                        f" {final_count(app, ids)[0]}/{MESSAGES}, ready in the work queue"
                        f" {ready_count(app, queue)}"
                    ),
                    workers,
                )
                workers.stop(second)
                left = ready_count(app, queue)
                if left == 0:
                    break  # nothing held, nothing left: the work queue is empty
            elapsed = time.monotonic() - started_at

            statuses = {i: task_status(i, app=app) for i in ids}
            letters = dead_letters(app)
            bodies = raw_bodies(app)
            redelivered = {
                key.decode().removeprefix(f"{prefix}:").rsplit(":", 1)[0]: int(count)
                for key in client.scan_iter(match=f"{prefix}:*", count=1000)
                if (count := client.get(key)) is not None
            }
        finally:
            workers.close()

    # --- the accounting ---------------------------------------------------------------
    expected_dlq = sum(EXPECTED[kind][1] is not None for kind, _ in plan) + RAW
    planned = Counter(kind for kind, _ in plan)
    found = Counter(bucket(s) for s in statuses.values())
    by_id: dict[str | None, list[DeadLetter]] = {}
    for letter in letters:
        by_id.setdefault(letter.task_id, []).append(letter)
    in_dlq = Counter(kind for i, (kind, _) in zip(ids, plan, strict=True) if i in by_id)
    raw_found = sum(1 for body in raw if bodies[body] >= 1)
    wrong = [
        (i, kind, k, s["status"], s["error"], s["dead_lettered"], s["retries"])
        for i, (kind, k), s in ((i, p, statuses[i]) for i, p in zip(ids, plan, strict=True))
        if bucket(s) != kind or s["retries"] != expected_retries(kind, k)
    ]
    summary = (
        f"seed {SEED}: {MESSAGES} task messages + {RAW} raw; worker SIGKILLed after"
        f" {killed_at} final results; {len(redelivered)} deliveries redelivered;"
        f" {restarts} worker(s) after the kill; {elapsed:.1f} s"
    )
    lines = [summary, f"{'outcome':<48} {'expected':>8} {'found':>6} {'in DLQ':>7}"]
    for kind in [*EXPECTED, "raw"]:
        dlq = in_dlq[kind] if kind != "raw" else raw_found
        want = RAW if kind == "raw" else planned[kind]
        got = raw_found if kind == "raw" else found[kind]
        lines.append(f"{LABELS[kind]:<48} {want:>8} {got:>6} {dlq:>7}")
    lines.append(f"{LABELS['other']:<48} {0:>8} {found['other']:>6} {'':>7}")
    lines.append(f"{'left in the work queue':<48} {0:>8} {left:>6}")
    lines.append(f"{'DLQ messages (task ids + raw)':<48} {expected_dlq:>8} {len(letters):>6}")
    duplicated = {i for i, found_letters in by_id.items() if i and len(found_letters) > 1}
    raw_extra = sum(bodies.values()) - RAW
    kinds = dict(zip(ids, (kind for kind, _ in plan), strict=True))
    lines.append(
        f"{'duplicates in the DLQ (of redelivered messages)':<48} {'':>8}"
        f" {len(duplicated) + raw_extra:>6} {'':>7}"
        f"  {sorted(kinds[i] for i in duplicated) + ['raw'] * raw_extra}"
    )
    lines.append(f"redelivered: {sorted((kinds[i], c) for i, c in redelivered.items())}")
    print("\n" + "\n".join(lines))  # noqa: T201 - the table, shown by pytest -s

    # Each task id ended in its planned state, on its planned retry.
    assert not wrong, f"{len(wrong)} in the wrong state, e.g. {wrong[:3]}"
    assert found == planned
    # The DLQ holds each dead-lettered id with its reason and exception type, and the
    # others not at all; each raw message (reason poison_pill, no task id).
    for i, (kind, _) in zip(ids, plan, strict=True):
        _, reason, error = EXPECTED[kind]
        if reason is None:
            assert i not in by_id, (i, kind, by_id.get(i))
            continue
        assert by_id.get(i), (i, kind, "not in the DLQ")
        for letter in by_id[i]:
            assert (letter.reason, letter.exception_type, letter.task) == (
                reason,
                error,
                work.name,
            )
            assert letter.original_queue == queue
            assert letter.correlation_id == statuses[i]["correlation_id"]
        assert statuses[i]["dead_lettered"] == {"reason": reason}
    # Every message kept its correlation id, through retries, the kill and the DLQ.
    assert all(s["correlation_id"] for s in statuses.values())
    raw_letters = by_id.pop(None, [])
    assert {letter.reason for letter in raw_letters} == {"poison_pill"}
    assert all(bodies[body] >= 1 for body in raw), bodies
    assert sum(bodies.values()) == len(raw_letters)
    assert set(by_id) <= set(ids)  # nothing foreign (no DLX "rejected", no stray id)
    # Duplicates only where the docs allow them: the worker died between publishing a
    # message (a dead letter, or the retry leading to one) and acknowledging the one it
    # ran. That message was redelivered, so the tracker counted it; and the consumer
    # handles one raw message at a time.
    assert duplicated <= set(redelivered), (duplicated, redelivered)
    assert sum(bodies.values()) - RAW <= 1
    assert len(letters) == expected_dlq + sum(len(by_id[i]) - 1 for i in duplicated) + (
        sum(bodies.values()) - RAW
    )
    # The kill hit work in flight. A message is redelivered once per worker that let it
    # go: the one killed, and any stopped with work left (`restarts` - 1 of them).
    assert redelivered
    assert max(redelivered.values()) <= restarts
    assert elapsed < DEADLINE
