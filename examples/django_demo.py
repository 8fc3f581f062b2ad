"""stalwart's Django app at work: breakers from settings, health, and a staff reset.

Runs the project in ``django_project/`` in this process, through Django's test
client: no server, no outside service. The database is PostgreSQL when one answers
on 127.0.0.1:5432 (a scratch database, dropped at the end), else SQLite.

    python examples/django_demo.py
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "django_project"))
os.environ["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"


def postgres_answers() -> bool:
    """Whether a PostgreSQL server listens on 127.0.0.1:5432."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of its own for the demo, dropped after; or SQLite."""
    if not postgres_answers():
        print("database: SQLite (no PostgreSQL on 127.0.0.1:5432)")
        yield "sqlite"
        return
    import psycopg  # noqa: PLC0415 - only with PostgreSQL

    name = f"stalwart_demo_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    os.environ["DEMO_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{name}"
    print(f"database: PostgreSQL, scratch database {name}")
    try:
        yield "postgresql"
    finally:
        from django.db import connections  # noqa: PLC0415

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def show(label: str, response: Any) -> dict[str, Any]:
    """Print a response's status and the JSON fields that tell the story."""
    if "json" not in response.headers.get("Content-Type", ""):
        kind = response.headers.get("Content-Type", "no body")
        print(f"  {label:<44} HTTP {response.status_code}  ({kind})")
        return {}
    body = json.loads(response.content)
    keep = ("status", "total", "open", "state", "action", "title", "in_stock", "error")
    summary = {k: body[k] for k in keep if k in body}
    retry_after = response.headers.get("Retry-After")
    extra = f"  Retry-After: {retry_after}" if retry_after else ""
    print(f"  {label:<44} HTTP {response.status_code}  {json.dumps(summary)}{extra}")
    return body


def main() -> int:
    with scratch_database():
        import django  # noqa: PLC0415 - after the settings module is chosen

        django.setup()
        from demo_site import views  # noqa: PLC0415
        from django.contrib.auth import get_user_model  # noqa: PLC0415
        from django.core.management import call_command  # noqa: PLC0415
        from django.test import Client  # noqa: PLC0415

        call_command("migrate", verbosity=0)
        users = get_user_model()
        users.objects.create_user("operator", password="demo-pass", is_staff=True)  # noqa: S106
        users.objects.create_user("viewer", password="demo-pass")  # noqa: S106

        staff = Client(enforce_csrf_checks=True)
        staff.login(username="operator", password="demo-pass")  # noqa: S106
        viewer = Client(enforce_csrf_checks=True)
        viewer.login(username="viewer", password="demo-pass")  # noqa: S106
        anonymous = Client(enforce_csrf_checks=True)

        print("\n1. Breakers named in STALWART exist before their first call:")
        body = show("GET /resilience/health/ (staff)", staff.get("/resilience/health/"))
        expect(body, status="healthy", total=2)

        print("\n2. The inventory service goes down; its breaker opens after 3 failures:")
        views.INVENTORY_UP["value"] = False
        for n in range(1, 6):
            show(f"GET /orders/ #{n}", anonymous.get("/orders/"))
        health = show("GET /resilience/health/", staff.get("/resilience/health/"))
        expect(health, status="degraded", open=["inventory"])

        print("\n3. Only staff may reset a breaker (CSRF enforced):")
        reset = "/resilience/breakers/inventory/reset/"
        show("POST reset, anonymous", with_csrf(anonymous, reset))
        show("POST reset, a user who is not staff", with_csrf(viewer, reset))
        show("POST reset, staff, no CSRF token", staff.post(reset))
        views.INVENTORY_UP["value"] = True  # the service is back
        body = show("POST reset, staff", with_csrf(staff, reset))
        expect(body, state="closed")

        print("\n4. Calls flow again:")
        body = show("GET /orders/", anonymous.get("/orders/"))
        expect(body, in_stock=42)
        body = show("GET /resilience/health/", staff.get("/resilience/health/"))
        expect(body, status="healthy")

        print("\n5. manage.py stalwart breakers:")
        call_command("stalwart", "breakers")
    return 0


def expect(body: dict[str, Any], **fields: object) -> None:
    """Stop the demo if a response does not say what the story needs."""
    wrong = {key: body.get(key) for key, value in fields.items() if body.get(key) != value}
    if wrong:
        raise SystemExit(f"unexpected response: {wrong}, wanted {fields}")


def with_csrf(client: Any, path: str) -> Any:
    """POST as a script or a single-page app does: the CSRF cookie's value in a header."""
    from django.utils.crypto import get_random_string  # noqa: PLC0415

    token = get_random_string(32)
    client.cookies["csrftoken"] = token
    return client.post(path, HTTP_X_CSRFTOKEN=token)


if __name__ == "__main__":
    sys.exit(main())
