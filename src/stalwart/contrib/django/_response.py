"""A framework-free `stalwart.contrib._reply.Reply` as Django's response.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpResponse

if TYPE_CHECKING:
    from .._reply import Reply

__all__ = ["to_response"]


def to_response(reply: Reply) -> HttpResponse:
    """Return `reply` as a Django response: its status, content, type and headers.

    .. versionadded:: 0.1.0
    """
    response = HttpResponse(reply.content, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers:
        response[name] = value
    return response
