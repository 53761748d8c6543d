"""Helpers for readline completion.

The shell sets readline's word delimiters to space, tab, newline and ``;`` only, so a word being
completed may contain ``:`` and ``-`` (``ring:0``, ``--client-id``) and candidates are whole
words. Every completer must be fast and must never raise or print: readline calls it while the
user is typing.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["COMPLETER_DELIMS", "head_tokens", "matching", "sub_tokens"]

COMPLETER_DELIMS = " \t\n;"


def matching(candidates: Iterable[str], text: str) -> list[str]:
    """Candidates starting with ``text``, duplicates removed, order kept."""
    seen: dict[str, None] = {}
    for c in candidates:
        if c.startswith(text):
            seen.setdefault(c, None)
    return list(seen)


def head_tokens(line: str, begidx: int) -> list[str]:
    """Whole words before the one being completed (the command name included)."""
    return line[:begidx].split()


def sub_tokens(line: str, begidx: int) -> list[str] | None:
    """Words of the sub-command after ``;`` that precede the word being completed.

    ``None`` when no ``;`` has been typed yet (the user is still at ``nfv 1``).
    """
    head = line[:begidx]
    if ";" not in head:
        return None
    return head.split(";", 1)[1].split()
