"""The demo's URLs: one page calling a flaky dependency, and stalwart's views."""

from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("orders/", views.orders),
    # 3. the URLs: health, breakers, and the operator actions.
    path("resilience/", include("stalwart.contrib.django.urls")),
]
