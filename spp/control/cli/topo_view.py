"""``topo FILE.svg``, ``topo FILE.mmd`` and ``topo http``: the pictures of :mod:`spp.control.view`
from the CLI. The snapshot is read over REST, so they also work against SPP's own spp-ctl (which
has no page for ``topo http`` to open)."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any

import httpx

from spp.control.view.mermaid import render_mermaid
from spp.control.view.model import Graph, Snapshot, build_graph, process_name
from spp.control.view.svg import render_svg

from .client import CtlError, SppCtlClient
from .common import CliError

__all__ = ["collect_graph", "collect_snapshot", "open_page", "render_file"]


def collect_snapshot(client: SppCtlClient) -> tuple[Snapshot, list[str]]:
    """Every process's status as the REST API gives it, and warnings for the ones it could not get."""
    snap = Snapshot(processes=client.processes())
    warnings: list[str] = []
    paths = {"primary": "primary/status", "nfv": "nfvs", "vf": "vfs", "mirror": "mirrors", "pcap": "pcaps"}
    for p in snap.processes:
        kind, cid = str(p.get("type")), p.get("client-id")
        if kind not in paths:
            continue
        name = process_name(kind, cid if isinstance(cid, int) else None)
        path = paths[kind] if kind == "primary" else f"{paths[kind]}/{cid}"
        try:
            st: Any = client.get(path)
        except CtlError as e:
            if e.status is None:
                raise
            warnings.append(f"Warning: cannot get status of {name}: {e.message}")
            continue
        if isinstance(st, dict):
            snap.statuses[name] = st
    return snap, warnings


def collect_graph(client: SppCtlClient) -> tuple[Graph, list[str]]:
    snap, warnings = collect_snapshot(client)
    return build_graph(snap), warnings


def render_file(graph: Graph, ftype: str) -> str:
    """The text of ``topo FILE.svg`` or ``topo FILE.mmd``."""
    return render_svg(graph) if ftype == "svg" else render_mermaid(graph)


def open_page(client: SppCtlClient) -> str:
    """``topo http``: check that spp-ctl serves the page, open it with ``$BROWSER`` when set, and
    return the line to print. ``$BROWSER`` is a command (``%s`` stands for the URL, else the URL
    is appended); it is run without a shell and not waited for."""
    url = f"http://{client.addr}/"
    try:
        r = httpx.get(url, timeout=client.timeout)
    except httpx.HTTPError as e:
        raise CliError(f"Cannot reach spp-ctl's web page at {url}: {e}") from e
    if r.status_code != 200 or "text/html" not in r.headers.get("Content-Type", ""):
        raise CliError(
            f"spp-ctl at {client.addr} serves no web page (HTTP {r.status_code} for /): "
            "start spp-ctl with --web, or use 'topo term' or 'topo FILE.svg'."
        )
    browser = os.environ.get("BROWSER", "").strip()
    if not browser:
        return f"Web page: {url} (set $BROWSER to have 'topo http' open it)"
    # Like Python's webbrowser module: a colon-separated list of commands; the first one is used.
    argv = shlex.split(browser.split(":", 1)[0])
    if not argv:
        raise CliError(f"Web page: {url}; $BROWSER '{browser}' names no command")
    argv = [a.replace("%s", url) for a in argv] if any("%s" in a for a in argv) else [*argv, url]
    try:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        raise CliError(f"Web page: {url}; cannot start $BROWSER '{browser}': {e.strerror or e}") from e
    return f"Web page: {url} (opened with {argv[0]})"
