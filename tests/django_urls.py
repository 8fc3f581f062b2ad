"""URLs of the Django tests: stalwart's app under ``resilience/``, test views under ``t/``."""

from __future__ import annotations

from django.urls import include, path

import django_views

urlpatterns = [
    path("resilience/", include("stalwart.contrib.django.urls")),
    path("t/", include(django_views.urlpatterns)),
]
