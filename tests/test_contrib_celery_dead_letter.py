"""Dead letters on the real brokers: sent, listed, replayed, and poison that never runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

from celery_support import (
    BROKERS,
    REDIS_BACKEND_URL,
    broker_params,
    delete_exchanges,
    make_app,
    purge,
    running_worker,
    wait_for,
)
from stalwart.contrib.celery import ResilientTask
from stalwart.contrib.celery._wire import (
    CORRELATION_HEADER,
    DEAD_LETTER_EXCEPTION_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_TASK_HEADER,
    MAX_RETRIES_EXCEEDED,
    POISON_PILL,
    DeadLettered,
)
from stalwart.contrib.celery.dead_letter import (
    DEAD_LETTER_QUEUE_SETTING,
    EXCEPTION_MESSAGE_HEADER,
    REPLAYS_HEADER,
    DeadLetter,
    configure_dead_letters,
    dead_letter_queue_name,
    dead_letters,
    replay,
    send_to_dead_letter,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from celery import Task

CARD = "card-4111-1111-secret"
WAIT = 20.0


def stored(app: Celery, task_id: str) -> dict[str, Any]:
    """The result backend's record of a task, read afresh (Celery caches final states)."""
    meta: dict[str, Any] = app.backend.get_task_meta(task_id, cache=False)
    return meta


def outcome(app: Celery, task_id: str) -> dict[str, Any]:
    """Wait for a task's final state and return its record.

    Polled, rather than ``AsyncResult.get``: a result waited on subscribes to the
    backend, and unsubscribes when collected, later, through a connection of its own.
    """
    meta: dict[str, Any] = wait_for(
        lambda: (m := stored(app, task_id))["status"] in {"SUCCESS", "FAILURE"} and m
    )
    return meta


def raw_dead_letters(app: Celery) -> list[tuple[dict[str, Any], bytes]]:
    """Headers and body of every message in the DLQ, put back after reading."""
    name = dead_letter_queue_name(app)
    with app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            queue = Queue(name, Exchange(""), routing_key=name, durable=True)(channel)
            queue.declare()
            taken = []
            while (message := queue.get(no_ack=False)) is not None:
                taken.append(message)
            found = [(dict(m.headers), m.body) for m in taken]
            for message in taken:
                message.requeue()
        finally:
            channel.close()
    return [(h, b if isinstance(b, bytes) else b.encode()) for h, b in found]


@pytest.fixture
def dl_app(broker: str) -> Iterator[Celery]:
    """An app on `broker` with a dead-letter queue; its queues, results and connections
    are gone after."""
    app = make_app(broker)
    work = configure_dead_letters(app)
    yield app
    purge(app)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        name = dead_letter_queue_name(app)
        for queue in [*work, Queue(name, Exchange(""), routing_key=name, durable=True)]:
            queue(channel).delete()
    delete_exchanges(app)
    results = redis.Redis.from_url(REDIS_BACKEND_URL)
    try:
        keys = list(results.scan_iter(match=f"{app.main}:*"))
        if keys:
            results.delete(*keys)
    finally:
        results.close()
    app.backend.client.connection_pool.disconnect()
    app.close()


def dead_lettering_task(app: Celery, fixed: dict[str, bool], **options: Any) -> Task[Any, Any]:
    """A task that dead-letters its message until `fixed["yes"]`, then doubles its input."""
    seen: list[dict[str, Any]] = []

    @app.task(bind=True, name=app.main + ".charge", shared=False, **options)
    def charge(self: Task[Any, Any], amount: int, card: str) -> int:
        seen.append(dict(self.request.headers or {}))
        if not fixed["yes"]:
            try:
                raise ValueError(f"declined {card}")
            except ValueError as exc:
                send_to_dead_letter(self, MAX_RETRIES_EXCEEDED, exc)
        return amount * 2

    charge.seen = seen  # type: ignore[attr-defined]
    return charge


@broker_params
def test_dead_letter_is_stored_listed_and_replayed(dl_app: Celery) -> None:
    """A dead-lettered task is FAILURE/DeadLettered, in the DLQ with its headers and no
    secrets, listed without being consumed, and replayed to succeed once fixed."""
    app = dl_app
    fixed = {"yes": False}
    charge = dead_letter_task = dead_lettering_task(app, fixed)
    with running_worker(app):
        result = charge.apply_async(
            (21, CARD), headers={CORRELATION_HEADER: "corr-7"}, argsrepr="(21, '<card>')"
        )
        meta = outcome(app, result.id)
        assert meta["status"] == "FAILURE"
        dead = meta["result"]
        assert isinstance(dead, DeadLettered)
        assert (dead.reason, dead.task, dead.exception_type, dead.correlation_id) == (
            MAX_RETRIES_EXCEEDED,
            charge.name,
            "builtins.ValueError",
            "corr-7",
        )

        [(headers, body)] = wait_for(lambda: raw_dead_letters(app))
        assert headers[DEAD_LETTER_REASON_HEADER] == MAX_RETRIES_EXCEEDED
        assert headers[DEAD_LETTER_TASK_HEADER] == charge.name
        assert headers["id"] == result.id
        assert headers[DEAD_LETTER_EXCEPTION_HEADER] == "builtins.ValueError"
        assert headers[CORRELATION_HEADER] == "corr-7"
        assert headers[DEAD_LETTER_QUEUE_HEADER] == app.conf.task_default_queue
        assert EXCEPTION_MESSAGE_HEADER not in headers
        # The exception's message is nowhere; the arguments only in the body, to replay.
        assert "declined" not in json.dumps(headers, default=str)
        assert "declined" not in body.decode()
        assert CARD not in json.dumps(headers, default=str)
        assert CARD in body.decode()

        listed = dead_letters(app)
        assert listed == dead_letters(app)  # listing consumes nothing
        [letter] = listed
        assert letter == DeadLetter(
            result.id,
            charge.name,
            MAX_RETRIES_EXCEEDED,
            "builtins.ValueError",
            "corr-7",
            app.conf.task_default_queue,
            letter.dead_lettered_at,
            0,
        )
        assert letter.dead_lettered_at is not None
        assert abs(letter.dead_lettered_at - time.time()) < 60

        fixed["yes"] = True
        assert replay(app) == [letter]
        wait_for(lambda: stored(app, result.id)["status"] == "SUCCESS")
        assert stored(app, result.id)["result"] == 42
        assert dead_letters(app) == []
        replayed = dead_letter_task.seen[-1]  # type: ignore[attr-defined]
        assert replayed[REPLAYS_HEADER] == 1
        assert not any(key.startswith("x-stalwart-dead") for key in replayed)
        assert DEAD_LETTER_REASON_HEADER not in replayed
        assert "redelivered" not in replayed


@broker_params
@pytest.mark.parametrize("task_headers", [False, True], ids=["bare", "task-headers"])
def test_undecodable_message_goes_to_the_dlq_and_the_worker_goes_on(
    dl_app: Celery, task_headers: bool
) -> None:
    """A raw invalid-JSON message lands in the DLQ as a poison pill (its task, if named,
    becomes FAILURE/DeadLettered) and the worker still runs the next message."""
    app = dl_app

    @app.task(name=app.main + ".double", shared=False)
    def double(x: int) -> int:
        return 2 * x

    task_id = str(uuid.uuid4())
    headers = {"task": double.name, "id": task_id, "lang": "py"} if task_headers else {}
    with running_worker(app):
        with app.producer_or_acquire() as producer:
            producer.publish(
                b'{"not": json',
                exchange="",
                routing_key=app.conf.task_default_queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
            )
        assert outcome(app, double.delay(4).id)["result"] == 8

        [letter] = wait_for(lambda: dead_letters(app))
        assert letter.reason == POISON_PILL
        assert letter.exception_type == "kombu.exceptions.DecodeError"
        assert letter.original_queue == app.conf.task_default_queue
        [(_, body)] = raw_dead_letters(app)
        assert body == b'{"not": json'  # unchanged
        if task_headers:
            assert (letter.task_id, letter.task) == (task_id, double.name)
            meta = outcome(app, task_id)
            assert isinstance(meta["result"], DeadLettered)
            assert meta["result"].reason == POISON_PILL
        else:
            assert (letter.task_id, letter.task) == (None, None)
        assert outcome(app, double.delay(5).id)["result"] == 10


@pytest.mark.rabbitmq
@pytest.mark.redis
@pytest.mark.parametrize("broker", ["rabbitmq"])
def test_rabbitmq_dead_letter_exchange_catches_a_rejected_task(dl_app: Celery) -> None:
    """On RabbitMQ, a task that rejects its message itself reaches the DLQ through the
    dead-letter exchange, listed with RabbitMQ's reason and its original queue."""
    app = dl_app

    @app.task(name=app.main + ".refuse", shared=False, acks_late=True)
    def refuse() -> None:
        raise Reject("refused", requeue=False)

    with running_worker(app):
        result = refuse.delay()
        outcome(app, result.id)
        [letter] = wait_for(lambda: dead_letters(app))
    assert (letter.task_id, letter.task, letter.reason) == (result.id, refuse.name, "rejected")
    assert letter.original_queue == app.conf.task_default_queue


@broker_params
def test_resilient_task_poison_pill_lands_in_the_dlq(dl_app: Celery) -> None:
    """A ResilientTask failing with a poison class is dead-lettered at once, reason
    poison_pill, and its listener hears of it."""
    app = dl_app
    events: list[Any] = []

    class Listener:
        def on_give_up(self, details: Any) -> None:
            events.append(details)

        def on_dead_letter(self, event: Any) -> None:
            events.append(event)

    @app.task(base=ResilientTask, name=app.main + ".parse", shared=False, listeners=[Listener()])
    def parse(text: str) -> int:
        return int(text)

    with running_worker(app):
        result = parse.delay("not a number")
        meta = outcome(app, result.id)
        [letter] = wait_for(lambda: dead_letters(app))
    assert isinstance(meta["result"], DeadLettered)
    assert (letter.task_id, letter.reason, letter.exception_type) == (
        result.id,
        POISON_PILL,
        "builtins.ValueError",
    )
    dead_events = [e for e in events if hasattr(e, "reason")]
    assert [(e.reason, e.task_id) for e in dead_events] == [(POISON_PILL, result.id)]


@broker_params
def test_command_line_lists_and_replays(dl_app: Celery, broker: str) -> None:
    """`python -m stalwart.contrib.celery` lists dead letters as JSON and replays one by
    id (exit 0), and says which ids it did not find (exit 1), with no terminal."""
    app = dl_app
    fixed = {"yes": False}
    charge = dead_lettering_task(app, fixed)
    queue = dead_letter_queue_name(app)

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "stalwart.contrib.celery"),
                *("-b", BROKERS[broker], "--queue", queue, *arguments),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    with running_worker(app):
        result = charge.delay(1, CARD)
        outcome(app, result.id)
        wait_for(lambda: dead_letters(app))

        listing = cli("dead-letters", "--json")
        assert listing.returncode == 0, listing.stderr
        [row] = json.loads(listing.stdout)
        assert row["task_id"] == result.id
        assert row["reason"] == MAX_RETRIES_EXCEEDED
        assert CARD not in listing.stdout

        table = cli("dead-letters")
        assert table.returncode == 0, table.stderr
        assert result.id in table.stdout
        assert "max_retries_exceeded" in table.stdout

        fixed["yes"] = True
        missing = str(uuid.uuid4())
        again = cli("replay", "--id", result.id, "--id", missing, "--json")
        assert again.returncode == 1
        assert [r["task_id"] for r in json.loads(again.stdout)] == [result.id]
        assert missing in again.stderr
        wait_for(lambda: stored(app, result.id)["status"] == "SUCCESS")
        assert stored(app, result.id)["result"] == 2

        usage = cli("replay")
        assert usage.returncode == 2  # --id or --all is required


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"])
def test_replay_by_id_leaves_the_others(dl_app: Celery) -> None:
    """Replaying some ids moves only those; the others stay, in their order (a listing
    of fewer than all moves those it saw to the back, on Redis)."""
    app = dl_app
    fixed = {"yes": False}
    charge = dead_lettering_task(app, fixed)
    with running_worker(app):
        results = [charge.delay(n, "x") for n in range(3)]
        for result in results:
            outcome(app, result.id)
        wait_for(lambda: len(dead_letters(app)) == 3)
        first, second, third = (r.id for r in results)
        assert [x.task_id for x in dead_letters(app)] == [first, second, third]
        # On Redis a message put back goes to the back: a partial listing rotates.
        assert [x.task_id for x in dead_letters(app, limit=1)] == [first]
        assert [x.task_id for x in dead_letters(app)] == [second, third, first]
        fixed["yes"] = True
        assert [x.task_id for x in replay(app, ids=[second])] == [second]
        wait_for(lambda: stored(app, second)["status"] == "SUCCESS")
        assert [x.task_id for x in dead_letters(app)] == [third, first]


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis"])
def test_exception_message_only_when_opted_in(dl_app: Celery) -> None:
    """The exception's message travels only with include_exception_message=True, cut to
    1,000 characters."""
    app = dl_app

    @app.task(bind=True, name=app.main + ".loud", shared=False)
    def loud(self: Task[Any, Any]) -> None:
        try:
            raise KeyError("x" * 5000)
        except KeyError as exc:
            send_to_dead_letter(self, POISON_PILL, exc, include_exception_message=True)

    with running_worker(app):
        outcome(app, loud.delay().id)
        [letter] = wait_for(lambda: dead_letters(app))
    assert letter.exception_message is not None
    assert len(letter.exception_message) == 1000
    assert letter.exception_type == "builtins.KeyError"


def test_eager_task_raises_dead_lettered() -> None:
    """A task run eagerly has no message: send_to_dead_letter raises DeadLettered."""
    app = Celery("stalwart-eager", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(bind=True, name="stalwart-eager.t", shared=False)
    def t(self: Task[Any, Any]) -> None:
        try:
            raise ValueError("no")
        except ValueError as exc:
            send_to_dead_letter(self, POISON_PILL, exc)

    result = t.delay()
    assert result.state == "FAILURE"
    assert isinstance(result.result, DeadLettered)
    assert result.result.reason == POISON_PILL
    assert isinstance(result.result.__cause__, ValueError)


def test_send_to_dead_letter_refuses_an_unknown_reason() -> None:
    """An unknown reason is a ValueError naming it."""
    app = Celery("stalwart-reason", broker="memory://", set_as_current=False)

    @app.task(bind=True, name="stalwart-reason.t", shared=False)
    def t(self: Task[Any, Any]) -> None:
        send_to_dead_letter(self, "tired", None)

    with pytest.raises(ValueError, match="reason must be one of .* got 'tired'"):
        t()


def test_configure_dead_letters_builds_queues_and_refuses_bad_input() -> None:
    """Work queues get the dead-letter exchange arguments (keeping their own), the DLQ
    name is recorded, the worker step is added once, and bad input raises at once."""
    app = Celery("stalwart-conf", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = "jobs"
    custom = Queue("reports", Exchange("reports", "topic"), routing_key="r.#", max_priority=5)
    work = configure_dead_letters(app, "jobs", custom)
    assert [q.name for q in work] == ["jobs", "reports"]
    assert app.conf.task_queues == work
    assert work[0].queue_arguments == {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "jobs.dead_letter",
    }
    assert work[1].max_priority == 5
    assert work[1].queue_arguments == {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "jobs.dead_letter",
    }
    assert (work[1].exchange.type, work[1].routing_key) == ("topic", "r.#")
    assert custom.queue_arguments is None  # the given queue is untouched
    assert dead_letter_queue_name(app) == "jobs.dead_letter"
    steps = len(app.steps["consumer"])
    configure_dead_letters(app, dead_letter_queue="failed")
    assert len(app.steps["consumer"]) == steps
    assert app.conf[DEAD_LETTER_QUEUE_SETTING] == "failed"
    assert dead_letter_queue_name(app) == "failed"

    with pytest.raises(TypeError, match="dead_letter_queue must be a string, got 5"):
        configure_dead_letters(app, dead_letter_queue=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dead_letter_queue must be a non-empty name, got ''"):
        configure_dead_letters(app, dead_letter_queue="")
    with pytest.raises(TypeError, match="queues must hold names or kombu Queues, got 3"):
        configure_dead_letters(app, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queues must hold non-empty names, got ''"):
        configure_dead_letters(app, "")
    with pytest.raises(ValueError, match="must not hold the dead-letter queue.*'failed'"):
        configure_dead_letters(app, "failed", dead_letter_queue="failed")


def test_default_dead_letter_queue_and_bad_listing_arguments() -> None:
    """Without configuration the DLQ is '<default queue>.dead_letter'; a bad limit or a
    string of ids is refused before anything is read."""
    app = Celery("stalwart-default", broker="memory://", set_as_current=False)
    assert dead_letter_queue_name(app) == "celery.dead_letter"
    with pytest.raises(ValueError, match="limit must be a count >= 0 or None, got -1"):
        dead_letters(app, limit=-1)
    with pytest.raises(TypeError, match="ids must be a collection of task ids"):
        replay(app, ids="abc")


def test_dead_letter_record_reads_rabbitmq_death_headers() -> None:
    """A message RabbitMQ dead-lettered itself is read from x-death (first death last)."""
    letter = DeadLetter.from_headers(
        {
            "id": "t1",
            "task": "proj.t",
            "x-death": [
                {"queue": "later", "reason": "expired", "count": 1},
                {"queue": "jobs", "reason": "rejected", "count": 1},
            ],
        }
    )
    assert letter == DeadLetter("t1", "proj.t", "rejected", original_queue="jobs")
    assert letter.as_dict()["original_queue"] == "jobs"
    assert DeadLetter.from_headers(None) == DeadLetter(None, None, None)


@broker_params
def test_replay_sends_a_duplicated_dead_letter_back_once(dl_app: Celery) -> None:
    """Two copies of one dead letter (a crash between publishing it and acknowledging the
    original) are replayed once: the task runs once more, not twice."""
    app = dl_app
    [work] = app.conf.task_queues
    name = dead_letter_queue_name(app)
    headers = {
        "id": "t1",
        "task": "tickets.create",
        DEAD_LETTER_REASON_HEADER: POISON_PILL,
        DEAD_LETTER_QUEUE_HEADER: work.name,
    }
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        work(channel).declare()
        Queue(name, Exchange(""), routing_key=name, durable=True)(channel).declare()
        producer = connection.Producer()
        for _ in range(2):
            producer.publish(
                b"[[], {}, {}]",
                exchange="",
                routing_key=name,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
            )
    dlq = Queue(name, Exchange(""), routing_key=name, durable=True)
    # Publishing is asynchronous: replay what is in the queue once both copies are.
    wait_for(lambda: waiting(app, dlq) == 2, "both copies in the dead-letter queue")
    assert [letter.task_id for letter in replay(app, ids=["t1"])] == ["t1"]
    wait_for(lambda: waiting(app, work) >= 1, "the replayed message in the work queue")
    with app.connection_for_write() as connection:
        bound = work(connection.default_channel)
        requeued = []
        while (message := bound.get(no_ack=True)) is not None:
            requeued.append(message.headers["id"])
    assert requeued == ["t1"]
    assert dead_letters(app) == []


def waiting(app: Celery, queue: Queue) -> int:
    """How many messages `queue` holds now."""
    with app.connection_for_write() as connection:
        return int(queue(connection.default_channel).queue_declare(passive=True).message_count)
