"""Rate limiting of repeated log lines, so a peer that reconnects in a loop cannot flood the log.

SPP's C processes retry a refused connection every second, a script may poll the API in a tight
loop, and anyone may connect to the wire ports: each of those writes the same line again and
again. :class:`RateLimitFilter` lets the first :data:`BURST` lines of a kind through per
:data:`WINDOW` seconds and drops the rest; the next line of that kind after the window says how
many were dropped. A "kind" is the format string for warnings and errors (their arguments, e.g.
a peer's port, change from one attempt to the next) and the full text for info and debug lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

WINDOW = 10.0
BURST = 5
MAX_KINDS = 4096
"""Bound on the kinds remembered; the oldest are forgotten first."""


@dataclass
class _Kind:
    window_start: float
    passed: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """A :class:`logging.Filter` for a handler; see the module docstring."""

    def __init__(self, window: float = WINDOW, burst: int = BURST) -> None:
        super().__init__()
        self.window = window
        self.burst = burst
        self._kinds: dict[tuple[object, ...], _Kind] = {}

    def _key(self, record: logging.LogRecord) -> tuple[object, ...]:
        if record.levelno >= logging.WARNING:
            return (record.name, record.levelno, str(record.msg))
        return (record.name, record.levelno, record.getMessage())

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = self._key(record)
        kind = self._kinds.get(key)
        if kind is None or now - kind.window_start >= self.window:
            suppressed = kind.suppressed if kind is not None else 0
            self._kinds.pop(key, None)
            self._kinds[key] = _Kind(window_start=now, passed=1)
            if len(self._kinds) > MAX_KINDS:
                del self._kinds[next(iter(self._kinds))]
            if suppressed:
                record.msg = (
                    f"{record.msg} [{suppressed} similar lines suppressed in the last {self.window:g} s]"
                )
            return True
        if kind.passed < self.burst:
            kind.passed += 1
            return True
        kind.suppressed += 1
        return False
