"""``manage.py stalwart``: list the breakers, reset (force open, disable) one.

.. code-block:: console

    $ python manage.py stalwart breakers           # a table
    $ python manage.py stalwart breakers --json    # {"timestamp", "health", "breakers"}
    $ python manage.py stalwart reset jira         # also force-open, disable

The command sees the breakers of its own process: those named in
``STALWART["BREAKERS"]``, with the state the storage holds. With a shared storage
(a Redis URL in ``STORAGE``) that is the state every process shares; with the memory
storage it is a fresh, closed state, and a reset here changes no other process.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError

from .....breaker.registry import registry
from .... import _admin

if TYPE_CHECKING:
    from argparse import ArgumentParser

__all__ = ["Command"]

_COLUMNS = ("name", "state", "health", "failures", "rejected", "retry_after")


def _actor() -> str:
    try:
        return f"manage.py ({getpass.getuser()})"
    except (OSError, KeyError):  # no user name in this environment
        return "manage.py"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


class Command(BaseCommand):
    """List the breakers, or reset, force open or disable one.

    .. versionadded:: 0.1.0
    """

    help = "List stalwart's circuit breakers, or reset, force open or disable one."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Add the sub-commands: breakers [--json], reset/force-open/disable NAME."""
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        listing = commands.add_parser("breakers", help="list the breakers and their state")
        listing.add_argument("--json", action="store_true", help="print JSON")
        for action in _admin.ACTIONS:
            one = commands.add_parser(action, help=f"{action.replace('-', ' ')} a breaker")
            one.add_argument("name", help="the breaker's name")

    def handle(self, *_: Any, **options: Any) -> None:
        """Run the sub-command."""
        command = options["command"]
        if command == "breakers":
            self._list(as_json=options["json"])
            return
        caller = _admin.Caller(authenticated=True, superuser=True, name=_actor())
        reply = _admin.operator_action(
            _admin.plan_action(registry, options["name"], command, caller)
        )
        if reply.status != 200:
            raise CommandError(
                f"no breaker named {options['name']!r}; breakers: "
                + (", ".join(registry.names()) or "none")
            )
        self.stdout.write(f"{reply.body['name']}: {reply.body['state']}")

    def _list(self, *, as_json: bool) -> None:
        snapshot = registry.snapshot()
        if as_json:
            body = {
                "timestamp": _admin.timestamp(),
                "health": _admin.health_body(registry.health()),
                "breakers": {name: stats.as_dict() for name, stats in snapshot.items()},
            }
            self.stdout.write(json.dumps(body, indent=2))
            return
        rows = [_COLUMNS] + [
            tuple(_cell(stats.as_dict()[column]) for column in _COLUMNS)
            for stats in snapshot.values()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        self.stdout.write(f"health: {registry.health().status}")
