"""A django-health-check 4.x check reporting open breakers (needs ``django-health-check``).

.. code-block:: python

    from health_check.views import HealthCheckView
    from stalwart.contrib.django.health import BreakerHealthCheck

    urlpatterns = [
        path("ht/", HealthCheckView.as_view(checks=["health_check.checks.Database",
                                                    BreakerHealthCheck])),
    ]

django-health-check knows two outcomes, passing and failing, and answers 500 when
any check fails, warnings included. A registry whose health is **critical** (more
than half of the breakers open) fails the check ("Unavailable: ..."); one that is
**degraded** (some open) passes it by default, with a WARNING on the
``stalwart.contrib.django`` logger naming the open breakers, so that one dependency
down does not take the whole service out of a load balancer. Set
``degraded_is_error=True`` (``(BreakerHealthCheck, {"degraded_is_error": True})`` in
``checks``) to fail it then too. For the three states themselves, use the app's
``health/`` view.

Importing this module imports django-health-check; the rest of the app works
without it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import dataclasses
import logging

from health_check import HealthCheck  # type: ignore[import-untyped]
from health_check.exceptions import (  # type: ignore[import-untyped]
    ServiceUnavailable,
    ServiceWarning,
)

from ...breaker.registry import registry

__all__ = ["BreakerHealthCheck"]

logger = logging.getLogger("stalwart.contrib.django")


@dataclasses.dataclass
class BreakerHealthCheck(HealthCheck):  # type: ignore[misc]  # an untyped base class
    """Fails when the default registry is critical (optionally when degraded too).

    Attributes:
        degraded_is_error: Whether some breakers open (degraded) fail the check too
            (as a warning, which django-health-check answers with 500 as well).

    .. versionadded:: 0.1.0
    """

    degraded_is_error: bool = False

    def run(self) -> None:  # sync: django-health-check runs it in a thread
        """Read the registry's health; raise when it is critical (or degraded)."""
        health = registry.health()
        if health.status == "healthy":
            return
        message = (
            f"{len(health.open)} of {health.total} circuit breakers open: {', '.join(health.open)}"
        )
        if health.status == "critical":
            raise ServiceUnavailable(message)
        if self.degraded_is_error:
            raise ServiceWarning(message)
        logger.warning("health is degraded: %s", message, extra={"open": list(health.open)})
