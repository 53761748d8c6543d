"""``pwd``, ``cd``, ``ls``, ``mkdir``, ``cat``, ``less``, ``env``: SPP's shell helpers, in Python.

SPP ran these through ``subprocess(..., shell=True)`` with the user's text in the command line.
Here nothing reaches a shell: each helper is a few lines of ``os``/``pathlib``.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from ..common import CliError

__all__ = ["cat", "cd", "complete_path", "env", "ls", "mkdir", "pwd"]


def _args(arg: str) -> list[str]:
    try:
        return shlex.split(arg)
    except ValueError as e:
        raise CliError(f"Invalid argument: {e}.") from e


def _path(text: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(text)))


def pwd(arg: str) -> None:
    print(os.getcwd())


def cd(arg: str) -> None:
    args = _args(arg)
    if len(args) > 1:
        raise CliError("Usage: cd [DIR]")
    target = _path(args[0]) if args else Path.home()
    if not target.is_dir():
        raise CliError("No such a directory.")
    try:
        os.chdir(target)
    except OSError as e:
        raise CliError(f"Cannot change directory: {e.strerror}.") from e
    print(os.getcwd())


def _ls_one(path: Path, long: bool) -> list[str]:
    entries = sorted(path.iterdir(), key=lambda p: p.name) if path.is_dir() else [path]
    lines = []
    for p in entries:
        if p.name.startswith(".") and path.is_dir():
            continue
        name = p.name + ("/" if p.is_dir() else "")
        if long:
            st = p.lstat()
            lines.append(f"{stat.filemode(st.st_mode)} {st.st_size:>10} {name}")
        else:
            lines.append(name)
    return lines


def ls(arg: str) -> None:
    args = _args(arg)
    long = "-l" in args
    paths = [a for a in args if a != "-l"] or ["."]
    for i, text in enumerate(paths):
        path = _path(text)
        if not path.exists():
            raise CliError(f"No such a file or directory: '{text}'.")
        if len(paths) > 1:
            print(("\n" if i else "") + f"{text}:")
        lines = _ls_one(path, long)
        if long:
            for line in lines:
                print(line)
        elif lines:
            print("  ".join(lines))


def mkdir(arg: str) -> None:
    args = _args(arg)
    if not args:
        raise CliError("Usage: mkdir DIR...")
    for text in args:
        try:
            _path(text).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"Cannot create directory '{text}': {e.strerror}.") from e


def cat(arg: str) -> None:
    args = _args(arg)
    if not args:
        raise CliError("Usage: cat FILE...")
    for text in args:
        path = _path(text)
        if not path.is_file():
            raise CliError(f"No such a file: '{text}'.")
        try:
            data = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise CliError(f"Cannot read '{text}': {e.strerror}.") from e
        print(data, end="" if data.endswith("\n") or not data else "\n")


def env(arg: str) -> None:
    prefix = arg.strip()
    for key in sorted(os.environ):
        if key.startswith(prefix):
            print(f"{key}={os.environ[key]}")


def complete_path(text: str, dirs_only: bool = False) -> list[str]:
    """File-name completion: ``src/ma`` -> ``src/main.py``, directories end with ``/``."""
    base, sep, partial = text.rpartition("/")
    folder = _path(base + sep) if sep else Path(".")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.startswith(partial) or (name.startswith(".") and not partial.startswith(".")):
            continue
        if (folder / name).is_dir():
            out.append(f"{base}{sep}{name}/")
        elif not dirs_only:
            out.append(f"{base}{sep}{name}")
    return out
