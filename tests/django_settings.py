"""Django settings of the Django tests (pytest-django reads them, see pyproject.toml).

The database is the real PostgreSQL on 127.0.0.1:5432 (trust auth); pytest-django makes
its own test database from it (named after the process, so runs side by side
never share one) and drops it after the run. Tests that need other
settings use ``override_settings`` / pytest-django's ``settings`` fixture.
"""

from __future__ import annotations

import os

SECRET_KEY = "stalwart-tests-only"  # noqa: S105 - a test settings module
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "stalwart.contrib.django",
    "django_testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "django_urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("STALWART_PG_DATABASE", "test"),
        "USER": os.environ.get("STALWART_PG_USER", "postgres"),
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": 0,
        # One test database per run: runs side by side on one server never share one.
        "TEST": {"NAME": f"stalwart_django_tests_{os.getpid()}"},
    }
}

TEMPLATES: list[dict[str, object]] = []

STALWART: dict[str, object] = {}
