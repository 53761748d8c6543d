"""Rates from two counter samples: pps, bit/s and drops per second, per drawn node."""

from __future__ import annotations

from typing import Any


def rates(
    prev: dict[str, dict[str, int]] | None, cur: dict[str, dict[str, int]], seconds: float
) -> dict[str, dict[str, Any]]:
    """``{node: {rx_pps, tx_pps, rx_bps, tx_bps, drop_pps, rx, tx, drops}}``; rates are None on
    the first sample of a node. A counter that went down (``clear``) restarts from zero."""
    out: dict[str, dict[str, Any]] = {}
    for node, c in cur.items():
        p = (prev or {}).get(node)
        drops = c.get("rx_drop", 0) + c.get("tx_drop", 0)
        entry: dict[str, Any] = {"rx": c.get("rx", 0), "tx": c.get("tx", 0), "drops": drops}

        def rate(key: str, scale: float = 1.0, p: dict[str, int] | None = p, c: dict[str, int] = c) -> Any:
            if p is None or seconds <= 0:
                return None
            return max(0, c.get(key, 0) - p.get(key, 0)) * scale / seconds

        entry["rx_pps"] = rate("rx")
        entry["tx_pps"] = rate("tx")
        entry["rx_bps"] = rate("rx_bytes", 8.0)
        entry["tx_bps"] = rate("tx_bytes", 8.0)
        if p is None or seconds <= 0:
            entry["drop_pps"] = None
        else:
            entry["drop_pps"] = max(0, drops - p.get("rx_drop", 0) - p.get("tx_drop", 0)) / seconds
        out[node] = entry
    return out


def human(v: float | None) -> str:
    """``0``, ``950``, ``1.23k``, ``19.5M``; ``-`` when there is no rate yet."""
    if v is None:
        return "-"
    if v < 0.5:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            x = v / div
            return f"{x:.3g}{suffix}" if x < 100 else f"{x:.0f}{suffix}"
    return f"{v:.0f}"
