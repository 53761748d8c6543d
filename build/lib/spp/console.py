"""What every console script shares: ending quietly when its reader goes away.

``spp -e 'pri; status' | head -1`` closes the pipe while ``spp`` may still be writing. A C tool
would be killed by SIGPIPE without a word; Python raises :class:`BrokenPipeError` instead, and an
unhandled one prints a traceback (and another one when the interpreter flushes stdout at exit).
:func:`quiet_broken_pipe` turns that into the C behaviour's exit status, 141 (128 + SIGPIPE),
after letting the program's own ``finally`` blocks and context managers clean up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec

__all__ = ["EXIT_BROKEN_PIPE", "quiet_broken_pipe", "silence_stdout"]

#: The shell's status for a process ended by SIGPIPE; scripts using ``set -o pipefail`` see it.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

P = ParamSpec("P")


def silence_stdout() -> None:
    """Point stdout at /dev/null so later prints (and the exit-time flush) cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def quiet_broken_pipe(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap a ``main()``: a closed stdout ends it with status 141 and no traceback."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            # Output that fitted in the buffer is written only now (or at exit, where a closed
            # pipe would print "Exception ignored ... BrokenPipeError" and end with status 120).
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            silence_stdout()
            return EXIT_BROKEN_PIPE

    return wrapper
