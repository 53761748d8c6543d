"""State every command needs: the registered spp-ctl servers, which one is current, the config.

Kept out of the shell so that the command modules depend on this small object only.
"""

from __future__ import annotations

from .client import SppCtlClient
from .config import CliConfig

__all__ = ["Session"]


class Session:
    """The spp-ctl servers (``server`` switches between them) and the CLI config."""

    def __init__(self, servers: list[SppCtlClient], config: CliConfig | None = None) -> None:
        if not servers:
            raise ValueError("at least one spp-ctl server is required")
        self.servers = list(servers)
        self.current = 0
        self.config = config if config is not None else CliConfig()

    @property
    def client(self) -> SppCtlClient:
        """The spp-ctl every process command talks to."""
        return self.servers[self.current]

    def close(self) -> None:
        for s in self.servers:
            s.close()
