"""The app's URLs: ``path("resilience/", include("stalwart.contrib.django.urls"))``.

URL names (namespace ``stalwart``):

- ``health``: ``GET health/``, the overall health;
- ``breakers``: ``GET breakers/``, every breaker's stats;
- ``breaker``: ``GET breakers/<name>/``, one breaker's stats;
- ``breaker-action``: ``POST breakers/<name>/<action>/``, where the action is
  ``reset``, ``force-open`` or ``disable``;
- ``tasks-active``: ``GET tasks/active/``, the Celery tasks running now;
- ``task-status``: ``GET tasks/<id>/``, a Celery task's status;
- ``task-revoke``: ``POST tasks/<id>/revoke/``, revoke a Celery task.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from . import tasks, views

__all__ = ["app_name", "urlpatterns"]

app_name = "stalwart"
urlpatterns: list[URLPattern] = [
    path("health/", views.health, name="health"),
    path("breakers/", views.breakers, name="breakers"),
    path("breakers/<str:name>/", views.breaker, name="breaker"),
    re_path(
        r"^breakers/(?P<name>[^/]+)/(?P<action>reset|force-open|disable)/$",
        views.breaker_action,
        name="breaker-action",
    ),
    path("tasks/active/", tasks.active_tasks, name="tasks-active"),
    path("tasks/<str:task_id>/", tasks.task_status, name="task-status"),
    path("tasks/<str:task_id>/revoke/", tasks.task_revoke, name="task-revoke"),
]
