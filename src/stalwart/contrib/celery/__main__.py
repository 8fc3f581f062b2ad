"""Command line: list and replay dead letters.

.. code-block:: text

    python -m stalwart.contrib.celery -A proj.celery:app dead-letters [--json] [--limit N]
    python -m stalwart.contrib.celery -A proj.celery:app replay --id TASK_ID [--id ...]
    python -m stalwart.contrib.celery -A proj.celery:app replay --all

``-A`` names the Celery app as ``celery -A`` does (``module:attribute``, or a module
holding ``app`` or ``celery``; the current directory is searched first). Without an
app, ``-b``/``--broker`` gives a broker URL, and ``--queue`` the dead-letter queue
(``celery.dead_letter`` by default). Nothing is interactive: it runs in CI.

Exit status: 0 on success; 1 if a task id given to ``replay`` is not in the
dead-letter queue (the others are replayed); 2 for a usage error.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from celery import Celery

    from .dead_letter import DeadLetter

__all__ = ["main"]

_COLUMNS = ("task_id", "task", "reason", "exception_type", "original_queue", "replays")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stalwart.contrib.celery",
        description="List and replay the dead letters of a Celery app.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-A", "--app", help="the Celery app, as for `celery -A`")
    where.add_argument("-b", "--broker", help="a broker URL, when there is no app to import")
    parser.add_argument("--queue", help="the dead-letter queue (default: the app's)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("dead-letters", help="list the dead letters")
    listing.add_argument("--limit", type=int, help="at most this many, oldest first")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    again = commands.add_parser("replay", help="send dead letters back to their queues")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", dest="ids", action="append", metavar="TASK_ID", help="a task id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every dead letter")
    again.add_argument("--json", action="store_true", help="one JSON array")
    return parser


def _load_app(arguments: argparse.Namespace) -> Celery:
    if arguments.broker:
        from celery import Celery  # noqa: PLC0415 - imported only when run

        return Celery("stalwart", broker=arguments.broker, set_as_current=False)
    from celery.app.utils import find_app  # noqa: PLC0415 - imported only when run

    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    app: Celery = find_app(arguments.app)
    return app


def _print(letters: list[DeadLetter], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([letter.as_dict() for letter in letters]))  # noqa: T201
        return
    rows = [_COLUMNS, *([str(getattr(x, c, "")) for c in _COLUMNS] for x in letters)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())  # noqa: T201


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (``sys.argv[1:]`` by default); return the status.

    .. versionadded:: 0.1.0
    """
    arguments = _parser().parse_args(argv)
    from .dead_letter import dead_letters, replay  # noqa: PLC0415 - after parsing (fast --help)

    app = _load_app(arguments)
    if arguments.command == "dead-letters":
        _print(dead_letters(app, arguments.queue, limit=arguments.limit), as_json=arguments.json)
        return 0
    ids = None if arguments.all else list(arguments.ids)
    replayed = replay(app, arguments.queue, ids=ids)
    _print(replayed, as_json=arguments.json)
    missing = sorted(set(ids or ()) - {letter.task_id for letter in replayed})
    if missing:
        print(f"not in the dead-letter queue: {', '.join(missing)}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
