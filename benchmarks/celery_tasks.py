"""Celery tasks: throughput of `ResilientTask` against a plain `Task` on RabbitMQ.

Throughput: one worker (solo pool, a thread of this process) consumes N messages of a
task that succeeds at once; the time runs from the first publish to the last task
done. Three tasks take turns, round after round, in one run: a plain `Task` as Celery
makes it, a plain `Task` with the delivery guarantees `ResilientTask` sets by default
(``acks_late`` and ``reject_on_worker_lost``), and `ResilientTask`. The ratio is the
median throughput of each to the first.

Overhead per call: each task executed eagerly (``Task.apply``), in ns per call, as a
ratio to the plain task.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest). Run:
``python benchmarks/celery_tasks.py --fast``; ``--json PATH`` keeps the figures.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import timeit
import uuid
from typing import Any

from _common import section_args, write_section
from celery import Celery
from celery.contrib.testing.worker import start_worker

from stalwart.contrib.celery import ResilientTask

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
KINDS = ("plain", "plain, acks_late", "ResilientTask")


class Counter:
    """Tasks done, and an event set when the count reaches the target."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.target = 0
        self.reached = threading.Event()

    def expect(self, target: int) -> None:
        with self.lock:
            self.done, self.target = 0, target
            self.reached.clear()

    def add(self) -> None:
        with self.lock:
            self.done += 1
            if self.done >= self.target:
                self.reached.set()


def make_app() -> tuple[Celery, dict[str, Any], Counter]:
    name = f"stalwart-bench-{uuid.uuid4().hex[:12]}"
    app = Celery(name, broker=BROKER, set_as_current=False)
    app.conf.update(
        task_default_queue=name,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_heartbeat=0,  # a worker thread sends none; with them, polls wait 10 s
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
    )
    counter = Counter()

    def work(x: int) -> int:
        counter.add()
        return x

    tasks = {
        "plain": app.task(name=f"{name}.plain")(work),
        "plain, acks_late": app.task(
            name=f"{name}.acks_late", acks_late=True, reject_on_worker_lost=True
        )(work),
        "ResilientTask": app.task(name=f"{name}.resilient", base=ResilientTask)(work),
    }
    app.finalize()
    return app, tasks, counter


def throughput(tasks: dict[str, Any], counter: Counter, kind: str, messages: int) -> float:
    """Tasks per second for `messages` messages of task `kind`."""
    counter.expect(messages)
    task = tasks[kind]
    started = time.perf_counter()
    for i in range(messages):
        task.delay(i)
    if not counter.reached.wait(120):
        sys.exit(f"{kind}: {counter.done} of {messages} tasks done in 120 s")
    return messages / (time.perf_counter() - started)


def eager_ns(tasks: dict[str, Any], kind: str, number: int) -> float:
    task = tasks[kind]
    return min(timeit.repeat(lambda: task.apply((1,)), number=number, repeat=5)) / number * 1e9


def main() -> None:
    args = section_args(__doc__.splitlines()[0])
    rounds, messages = (3, 300) if args.fast else (7, 1000)
    app, tasks, counter = make_app()
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        throughput(tasks, counter, "plain", 50)  # warm up: connections, the first messages
        for i in range(rounds):
            order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                rates[kind].append(throughput(tasks, counter, kind, messages))
    eager = {kind: eager_ns(tasks, kind, 2_000 if args.fast else 10_000) for kind in KINDS}
    counter.expect(0)
    base = statistics.median(rates["plain"])
    lines = [
        (
            f"One worker (solo pool) on RabbitMQ, {messages:,} messages of a task that"
            f" succeeds; median of {rounds} interleaved rounds."
        ),
        "",
        "| task | tasks per second | min | vs plain |",
        "|---|---:|---:|---:|",
    ]
    for kind, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {kind} | {median:,.0f} | {min(values):,.0f} | {median / base:.1%} |")
    lines += [
        "",
        "Executed eagerly (`Task.apply`), ns per call:",
        "",
        "| task | ns per call | vs plain |",
        "|---|---:|---:|",
    ]
    for kind, ns in eager.items():
        lines.append(f"| {kind} | {ns:,.0f} | {ns / eager['plain']:.2f}x |")
    results = {
        "messages": messages,
        "rounds": rounds,
        "tasks_per_second": rates,
        "eager_ns_per_call": eager,
        "throughput_vs_plain": statistics.median(rates["ResilientTask"]) / base,
    }
    write_section(args, "celery", "Celery tasks", results, "\n".join(lines))


if __name__ == "__main__":
    main()
