"""Settings of the demo project: stalwart's app in three lines (see STALWART below).

The database is SQLite in a temporary directory unless ``DEMO_DATABASE_URL`` names a
PostgreSQL database (``postgresql://user@host:port/name``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

SECRET_KEY = "demo-only-not-secret"  # noqa: S105 - a demo
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "demo_site.urls"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "stalwart.contrib.django",  # 1. the app
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Correlation ids, request deadlines, and open breakers / timeouts as 503 / 504.
    "stalwart.contrib.django.middleware.StalwartMiddleware",
]

# 2. the setting: breakers that exist from start-up, with their thresholds.
STALWART = {
    "DEFAULTS": {"failure_threshold": 5, "recovery_timeout": 60},
    "BREAKERS": {
        "inventory": {"failure_threshold": 3, "window": 60, "recovery_timeout": 30},
        "payments": {},
    },
    "REQUEST_DEADLINE": 10,
}

_url = os.environ.get("DEMO_DATABASE_URL")
if _url:
    _parts = urlsplit(_url)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _parts.path.lstrip("/"),
            "USER": _parts.username or "postgres",
            "HOST": _parts.hostname or "127.0.0.1",
            "PORT": str(_parts.port or 5432),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(Path(tempfile.mkdtemp(prefix="stalwart-demo-")) / "db.sqlite3"),
        }
    }
