"""Run-time settings of the CLI: SPP's ``src/cli/config/default.yml`` (+ ``topo.yml`` colours).

The defaults live here in Python rather than in a YAML file so that they are always there, even
in an install that does not ship package data. ``--config FILE`` still reads SPP's YAML layout
(``key: {val: ..., desc: ...}``) or a plain ``key: value`` mapping, and ``config KEY VAL`` changes
a value for the session after checking it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from .common import CliError

__all__ = ["DEFAULTS", "CliConfig", "ConfigError", "topo_size_percent"]


class ConfigError(Exception):
    """The ``--config`` file cannot be used (unreadable, not YAML, bad value)."""


def _is_int(v: str) -> bool:
    return re.fullmatch(r"\d+", v) is not None


def _is_float(v: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?", v) is not None


def topo_size_percent(v: str) -> str | None:
    """``60%`` / ``0.6`` / ``1`` -> ``"60%"``-style string, or ``None`` if invalid (SPP's rules)."""
    m = re.fullmatch(r"(\d+)%", v)
    if m:
        return v if 0 < int(m.group(1)) <= 100 else None
    if re.fullmatch(r"0\.\d+", v):
        return f"{float(v) * 100:g}%"
    if v == "1":
        return "100%"
    return None


def _is_mem(v: str) -> bool:
    return re.fullmatch(r"-m \d+|--socket-mem \d+(,\d+)?", v) is not None


def _is_pcap_port(v: str) -> bool:
    return re.fullmatch(r"(phy|ring):\d+", v) is not None


@dataclass(frozen=True)
class _Opt:
    default: Any
    desc: str
    #: Validates the *text* form of a value given with ``config KEY VAL``.
    check: Callable[[str], bool] | None = None
    #: Turns the checked text into the stored value.
    convert: Callable[[str], Any] = str


def _yaml_list(v: str) -> list[str]:
    obj = yaml.safe_load(v)
    return [str(x) for x in obj]


def _yaml_map(v: str) -> dict[str, str]:
    obj = yaml.safe_load(v)
    return {str(k): str(x) for k, x in obj.items()}


def _is_yaml_list(v: str) -> bool:
    try:
        return isinstance(yaml.safe_load(v), list)
    except yaml.YAMLError:
        return False


def _is_yaml_map(v: str) -> bool:
    try:
        return isinstance(yaml.safe_load(v), dict)
    except yaml.YAMLError:
        return False


DEFAULTS: dict[str, _Opt] = {
    "max_secondary": _Opt(16, "The maximum number of secondary processes", _is_int, int),
    "prompt": _Opt("spp > ", "Command prompt"),
    "sec_mem": _Opt("-m 512", "Mem size", _is_mem),
    "sec_m_lcore": _Opt(2, "Shared master lcore among secondaries", _is_int, int),
    "sec_wait_launch": _Opt(0.5, "Wait for launching secondary process in sec", _is_float, float),
    "sec_vhost_cli": _Opt("", "Vhost client mode, activated if set any of values"),
    "sec_nfv_nof_lcores": _Opt(1, "Default num of lcores for workers of spp_nfv", _is_int, int),
    "sec_vf_nof_lcores": _Opt(3, "Default num of lcores for workers of spp_vf", _is_int, int),
    "sec_mirror_nof_lcores": _Opt(2, "Default num of lcores for workers of spp_mirror", _is_int, int),
    "sec_pcap_nof_lcores": _Opt(2, "Default num of lcores for workers of spp_pcap", _is_int, int),
    "sec_pcap_port": _Opt("phy:0", "Default captured port", _is_pcap_port),
    "topo_size": _Opt("60%", "Percentage or ratio of topo", lambda v: topo_size_percent(v) is not None),
    "topo_sec_colors": _Opt(
        [
            "blue",
            "green",
            "orange",
            "chocolate",
            "black",
            "cyan3",
            "green3",
            "indianred",
            "lawngreen",
            "limegreen",
        ],
        "Colors of secondaries in topo (indexed by client ID)",
        _is_yaml_list,
        _yaml_list,
    ),
    "topo_port_colors": _Opt(
        {"phy": "white", "ring": "yellow", "vhost": "antiquewhite", "tap": "cornsilk", "nullpmd": "cyan"},
        "Colors of port types in topo",
        _is_yaml_map,
        _yaml_map,
    ),
}


class CliConfig:
    """Current values, starting from :data:`DEFAULTS` (optionally overridden by a file)."""

    def __init__(self) -> None:
        self._vals: dict[str, Any] = {}
        self._descs: dict[str, str] = {}
        for key, opt in DEFAULTS.items():
            self._vals[key] = opt.default
            self._descs[key] = opt.desc

    @classmethod
    def load(cls, path: str) -> CliConfig:
        """Read SPP's ``default.yml`` layout or a flat mapping; unknown keys are kept as strings."""
        cfg = cls()
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML") from e
        if data is None:
            return cfg
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must be a mapping of keys to values")
        for key, ent in data.items():
            key = str(key)
            if isinstance(ent, dict) and "val" in ent:
                val, desc = ent["val"], str(ent.get("desc", ""))
            else:
                val, desc = ent, ""
            try:
                cfg._set_value(key, val)
            except CliError as e:
                raise ConfigError(f"config file '{path}': {e}") from e
            if desc:
                cfg._descs[key] = desc
        return cfg

    def _set_value(self, key: str, val: Any) -> None:
        opt = DEFAULTS.get(key)
        if opt is None:
            self._vals[key] = val
            self._descs.setdefault(key, "")
            return
        if isinstance(val, list | dict) and isinstance(opt.default, list | dict):
            text = yaml.safe_dump(val, default_flow_style=True).strip()
        else:
            text = "" if val is None else str(val)
        self._vals[key] = self._checked(key, text)

    def _checked(self, key: str, text: str) -> Any:
        opt = DEFAULTS[key]
        if opt.check is not None and not opt.check(text):
            raise CliError(f'Invalid value "{text}" for "{key}"')
        return opt.convert(text)

    def __getitem__(self, key: str) -> Any:
        return self._vals[key]

    def __contains__(self, key: str) -> bool:
        return key in self._vals

    def set(self, key: str, text: str) -> Any:
        """``config KEY VAL``: validate, store and return the new value."""
        if key not in self._vals:
            raise CliError(f"Invalid config key \"{key}\": 'config' lists the keys.")
        if key in DEFAULTS:
            self._vals[key] = self._checked(key, text)
        else:
            self._vals[key] = text
        return self._vals[key]

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
        for key, val in self._vals.items():
            if key.startswith(prefix):
                yield key, val, self._descs.get(key, "")

    def keys(self) -> list[str]:
        return list(self._vals)
