"""Django: breakers from settings, health and operator views, transaction retry.

A reusable app, with middleware and a management command. Install with
``pip install "stalwart[django]"``, then in the settings:

.. code-block:: python

    INSTALLED_APPS = [..., "stalwart.contrib.django"]
    STALWART = {"BREAKERS": {"jira": {"failure_threshold": 5}}}

and in the URLs: ``path("resilience/", include("stalwart.contrib.django.urls"))``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations
