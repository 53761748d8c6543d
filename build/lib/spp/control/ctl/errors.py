"""Errors that end a REST request with a definite status code and a plain-text message.

Handlers raise :class:`ApiError` (or a subclass) anywhere below the web layer; the error
middleware in :mod:`spp.control.ctl.webapi` turns it into ``<status>`` + ``text/plain`` body.
Keeping the status next to the message means no layer has to guess how a failure maps to HTTP —
SPP's spp-ctl got this wrong and answered 500 for every invalid value (its ``KeyInvalid`` bug).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure with the HTTP status and the exact message the client should see."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KeyRequired(ApiError):
    """A required body key is missing: ``400 key(<name>) required.`` (SPP's wording, verbatim)."""

    def __init__(self, key: str) -> None:
        super().__init__(400, f"key({key}) required.")


class KeyInvalid(ApiError):
    """A body value is not acceptable: ``400 invalid key(<name>): <value>.``

    This is the message SPP meant to send; its implementation raised TypeError instead and the
    client got a bare 500, so the client never learned which field was wrong.
    """

    def __init__(self, key: str, value: Any) -> None:
        super().__init__(400, f"invalid key({key}): {shown(value)}.")


SHOWN_MAX = 200
"""Longest rendering of a client's value inside an error message."""


def shown(value: Any) -> str:
    """``str(value)`` as SPP showed it, cut to :data:`SHOWN_MAX` characters.

    A client's value may be megabytes long or nested a thousand levels deep (``str`` of that
    exhausts the recursion limit); the message only needs to point at it.
    """
    try:
        text = str(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__} too deep or too large to show>"
    if len(text) > SHOWN_MAX:
        return text[: SHOWN_MAX - 3] + "..."
    return text


class NotFound(ApiError):
    """404 with one of SPP's verbatim messages (``primary not found.``, ``sec_id N not found.``)."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class ProcessUnavailable(ApiError):
    """503: the process broke its connection or did not answer in time and has been dropped.

    SPP answered 500 and, for a hung process, kept it registered; a 503 tells the client the
    request may be retried once the process is back (C processes reconnect every second).
    """

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class BadReply(ApiError):
    """502: the process answered, but not with something spp-ctl can pass on (e.g. status not JSON)."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message)
