"""Sample plugin, as SPP ships: ``load_cmd hello`` then ``hello alice`` -> ``Hello, alice!``."""

from __future__ import annotations

from typing import Any

from spp.control.cli.common import CliError


def do_hello(self: Any, name: str) -> None:
    """Say hello to the given user: hello NAME"""
    name = name.strip()
    if not name:
        raise CliError("name is required!")
    print(f"Hello, {name}!")
