"""The framework-free response every web adapter writes: one record, one problem builder.

`stalwart.contrib._admin` (health, stats, operator actions) and
`stalwart.contrib._web` (request rules: errors, deadlines) answer with a `Reply`; an
adapter turns it into its framework's response with one function that copies
`Reply.status`, `Reply.content`, `Reply.content_type` and `Reply.headers`, and
decides nothing.

Errors are RFC 9457 problem details, built by `problem` alone:

- a plain error (``400``, ``401``, ``403``, ``404``, ``405``, ``501``, ``503``, ...)
  has the type ``about:blank``, the status phrase as title, and no other member;
- an error that says more (``breaker``, ``retry_after``, ...) has a type of its own
  (``urn:stalwart:problem:...``) and a title that names it.

Nothing here imports a web framework.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import dataclasses
import json
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

__all__ = [
    "BLANK",
    "JSON",
    "NEVER_CACHE",
    "PROBLEM_JSON",
    "TEXT_PLAIN",
    "Headers",
    "Reply",
    "never_cache",
    "problem",
]

JSON: Final = "application/json"
"""The media type of the JSON replies."""
PROBLEM_JSON: Final = "application/problem+json"
"""The media type of RFC 9457 problem details."""
TEXT_PLAIN: Final = "text/plain; charset=utf-8"
"""The media type of the plain-text replies."""
BLANK: Final = "about:blank"
"""The problem ``type`` that means no more than the status code."""
NEVER_CACHE: Final = "max-age=0, no-cache, no-store, must-revalidate, private"
"""The ``Cache-Control`` of a reply no cache may store (Django's ``never_cache``)."""

Headers = tuple[tuple[str, str], ...]
"""Response headers as (name, value) pairs, in order."""


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A response, framework-free: what an adapter turns into its own response object.

    The body is kept as data (what tests and logs read); `content` is what goes on the
    wire.

    .. versionadded:: 0.1.0
    """

    status: int
    """The HTTP status code."""
    body: dict[str, Any]
    """The body as data: a JSON object, or the problem a plain-text reply shows."""
    content_type: str = JSON
    """The ``Content-Type`` header; ``text/...`` means the plain-text form."""
    headers: Headers = ()
    """Other headers, as (name, value) pairs."""

    @property
    def content(self) -> bytes:
        """The body encoded: JSON, or for a ``text/...`` reply the line ``"title: detail"``.

        JSON is written as `json.dumps` writes it by default (ASCII only, ``", "`` and
        ``": "`` between items), as Django's ``JsonResponse`` does.
        """
        if self.content_type.startswith("text/"):
            return f"{self.body['title']}: {self.body['detail']}\n".encode()
        return json.dumps(self.body).encode()

    def header(self, name: str) -> str | None:
        """Return the value of the header `name` (any case), or ``None`` without one."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def problem(
    status: int,
    detail: str,
    *,
    problem_type: str = BLANK,
    title: str | None = None,
    headers: Headers = (),
    as_json: bool = True,
    **extensions: Any,
) -> Reply:
    """Return an RFC 9457 problem-details reply.

    The `detail` is written by the caller for the client; never pass an exception's
    message (it may hold secrets).

    Args:
        status: The HTTP status code (also the ``status`` member).
        detail: What happened, in a sentence.
        problem_type: ``about:blank`` (the default) for an error that means no more than
            its status code: its title is the status phrase and it has no extension
            members. Else a URI of stalwart's (``urn:stalwart:problem:...``).
        title: The title of a `problem_type` of stalwart's; none for ``about:blank``.
        headers: Headers to send with it.
        as_json: ``application/problem+json`` if true, else plain text: the line
            ``"title: detail"``.
        **extensions: Extension members (``breaker=...``), for a `problem_type` of
            stalwart's only.

    Raises:
        ValueError: ``about:blank`` with a title or extension members, or another
            type without a title.

    .. versionadded:: 0.1.0
    """
    if problem_type == BLANK:
        if title is not None or extensions:
            raise ValueError(
                "an about:blank problem takes neither a title nor extension members,"
                f" got title={title!r} and {sorted(extensions)}"
            )
        title = HTTPStatus(status).phrase
    elif not title:
        raise ValueError(f"the problem type {problem_type!r} needs a title, got {title!r}")
    body = {"type": problem_type, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return Reply(status, body, PROBLEM_JSON if as_json else TEXT_PLAIN, headers)


def never_cache(reply: Reply) -> Reply:
    """Return `reply` with the headers telling every cache not to store it.

    ``Expires`` (now) and ``Cache-Control`` (`NEVER_CACHE`), as Django's
    ``add_never_cache_headers`` writes them.

    .. versionadded:: 0.1.0
    """
    fresh = (("Expires", formatdate(usegmt=True)), ("Cache-Control", NEVER_CACHE))
    return dataclasses.replace(reply, headers=(*reply.headers, *fresh))
