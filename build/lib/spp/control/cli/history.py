"""Command history: readline's (saved to ``~/.spp_history``) when interactive, a list otherwise.

SPP leaves ``bye``, ``exit``, ``history`` and ``redo`` out of the history; so do we. Batch runs
keep their own in-memory history (``history``/``redo`` work inside a script) and never touch the
user's history file.
"""

from __future__ import annotations

import contextlib

try:
    import readline
except ImportError:  # pragma: no cover - not on Debian, kept for odd Pythons
    readline = None  # type: ignore[assignment]

__all__ = ["EXCLUDED", "History"]

EXCLUDED = ("bye", "exit", "history", "redo")
HISTORY_LENGTH = 1000


class History:
    """Numbered command history (1-origin, as ``history`` prints it)."""

    def __init__(self, path: str | None = None, use_readline: bool = False) -> None:
        self.path = path
        self.use_readline = use_readline and readline is not None
        self._items: list[str] = []

    def load(self) -> None:
        """Read the history file into readline (creating it, as SPP does)."""
        if not (self.use_readline and self.path):
            return
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(self.path)
        except FileNotFoundError:
            self.save()
        except OSError:
            pass

    def save(self) -> None:
        if self.use_readline and self.path:
            with contextlib.suppress(OSError):
                readline.write_history_file(self.path)

    def entries(self) -> list[str]:
        if self.use_readline:
            n = readline.get_current_history_length()
            return [readline.get_history_item(i) or "" for i in range(1, n + 1)]
        return list(self._items)

    def record(self, line: str, typed: bool) -> None:
        """Account for a command that just ran.

        ``typed`` says the line came from ``input()``, where readline already appended it.
        """
        words = line.split()
        excluded = not words or words[0] in EXCLUDED
        if self.use_readline:
            if typed and excluded and words:
                n = readline.get_current_history_length()
                if n and readline.get_history_item(n) == line:
                    readline.remove_history_item(n - 1)
            self.save()
        elif not excluded:
            self._items.append(line)
