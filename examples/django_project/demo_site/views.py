"""A view calling a flaky inventory service through the breaker named in settings."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

import stalwart

INVENTORY_UP = {"value": True}
"""Whether the pretend inventory service answers (the demo switches it)."""


@stalwart.circuit_breaker("inventory")  # the breaker STALWART["BREAKERS"] made
def stock(sku: str) -> int:
    """Ask the inventory service how many `sku` are in stock."""
    if not INVENTORY_UP["value"]:
        raise ConnectionError(f"inventory service unreachable (asking for {sku})")
    return 42


def orders(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - a view's signature
    """An order page: a failure of the inventory gives 502; an open breaker, 503."""
    try:
        return JsonResponse({"sku": "A-1", "in_stock": stock("A-1")})
    except ConnectionError:
        return JsonResponse({"error": "inventory unavailable"}, status=502)
