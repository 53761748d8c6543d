"""The web page of ``spp-ctl --web`` in headless Chromium (Debian's, driven by Playwright), against
real processes: it shows what runs, its rates move while traffic flows, what the page changes
reaches the REST API and what REST changes reaches the page without a reload; its websocket
ignores bad messages and refuses other origins."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from spp.control.ctl.web import MAX_READ
from spp.control.view.model import port_node_id
from spp.integrations.testbed import Testbed, wait_for
from tests.cli_doubles import cli_env

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    """nullpmd:0 -> ring:0 (nfv 1), ring:0 -> nullpmd:1 (nfv 2); ring:2 and ring:3 spare."""
    with Testbed(nb_rings=4, extra_ctl_args=["--web"]) as b:
        nfv1 = b.launch_nfv(1)
        nfv2 = b.launch_nfv(2, main_lcore=1)
        for port in ("nullpmd:0", "ring:0", "ring:2"):
            nfv1.add(port)
        for port in ("ring:0", "nullpmd:1", "ring:3"):
            nfv2.add(port)
        nfv1.patch("nullpmd:0", "ring:0")
        nfv2.patch("ring:0", "nullpmd:1")
        nfv1.forward()
        nfv2.forward()
        yield b


@pytest.fixture(scope="module")
def page(bed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            pg = ctx.new_page()
            pg.goto(f"http://127.0.0.1:{bed.api_port}/")
            pg.wait_for_selector("#graph svg", timeout=30_000)
            pg.evaluate("window.__loadedOnce = true")  # gone if the page reloads
            yield pg
        finally:
            ctx.close()


def names_in_graph(page: Any) -> set[str]:
    return set(page.eval_on_selector_all("#graph .node", "els => els.map(e => e.dataset.name)"))


def patches_in_page(page: Any, proc: str) -> list[str]:
    sel = f'.proc[data-process="{proc}"] li.patch'
    return [
        t.split(" Unpatch")[0].strip()
        for t in page.eval_on_selector_all(sel, "els => els.map(e => e.innerText)")
    ]


def test_page_shows_the_processes_and_ports_that_exist(page: Any) -> None:
    names = names_in_graph(page)
    assert {"primary", "nfv:1", "nfv:2", "nullpmd:0", "nullpmd:1", "ring:0", "ring:2", "ring:3"} <= names
    # Names are text in the page (searchable), and so are the units of the rates.
    text = page.inner_text("body")
    for word in ("nfv:1", "nullpmd:0", "pps", "bit/s", "drops"):
        assert word in text, word
    assert patches_in_page(page, "nfv:1") == ["nullpmd:0 → ring:0"]
    assert page.inner_text("#conn") == "live"


def test_rates_change_while_traffic_flows(page: Any) -> None:
    node = port_node_id("nullpmd:1")

    def tx_count() -> int:
        cell = page.query_selector(f'#rates tr[data-node="{node}"] td:nth-child(8)')
        return int(cell.inner_text()) if cell else -1

    wait_for(lambda: tx_count() > 0, 20, "nullpmd:1's tx count in the page")
    first = tx_count()
    wait_for(lambda: tx_count() > first, 20, "the page's counts to move")
    rate = page.text_content(f"#ratetx-{node}") or ""  # SVG text
    m = re.fullmatch(r"tx (\S+) pps · (\S+) bit/s", rate)
    assert m and m[1] not in ("0", "-") and m[2] not in ("0", "-"), rate


def test_a_patch_made_in_the_page_reaches_the_rest_api(page: Any, bed: Testbed) -> None:
    form = page.locator('.proc[data-process="nfv:1"] form')
    form.locator('select[name="src"]').select_option("ring:2")
    form.locator('select[name="dst"]').select_option("ring:0")
    form.locator('button[type="submit"]').click()
    wait_for(
        lambda: {"src": "ring:2", "dst": "ring:0"} in bed.ok("GET", "/v1/nfvs/1").json()["patches"],
        15,
        "the page's patch in GET /v1/nfvs/1",
    )
    wait_for(lambda: "ring:2 → ring:0" in patches_in_page(page, "nfv:1"), 15, "the page to show its patch")
    assert "done" in page.inner_text("#message")


def test_a_patch_made_over_rest_appears_without_reload(page: Any, bed: Testbed) -> None:
    bed.ok("PUT", "/v1/nfvs/2/patches", {"src": "ring:3", "dst": "nullpmd:1"})
    wait_for(lambda: "ring:3 → nullpmd:1" in patches_in_page(page, "nfv:2"), 15, "the REST patch in the page")
    edge = page.locator('#graph g.edge[aria-label="ring:3 to nullpmd:1, patched by nfv:2"]')
    assert edge.count() == 1
    assert page.evaluate("window.__loadedOnce") is True


def test_a_half_filled_patch_form_survives_a_topology_change(page: Any, bed: Testbed) -> None:
    """The cards are rebuilt when the topology changes (here: another user stops nfv 2 over
    REST); what was chosen in a card's form, and the field with the focus, stay as they were."""
    form = page.locator('.proc[data-process="nfv:1"] form')
    form.locator('select[name="src"]').select_option("ring:2")
    form.locator('select[name="dst"]').select_option("nullpmd:0")
    form.locator('select[name="dst"]').focus()
    bed.ok("PUT", "/v1/nfvs/2/forward", {"action": "stop"})
    card = '.proc[data-process="nfv:2"] h3'
    try:
        wait_for(lambda: "nfv:2 (idling)" in page.inner_text(card), 15, "the page to show nfv 2 stopped")
        form = page.locator('.proc[data-process="nfv:1"] form')
        assert form.locator('select[name="src"]').input_value() == "ring:2"
        assert form.locator('select[name="dst"]').input_value() == "nullpmd:0"
        assert page.evaluate("document.activeElement.name") == "dst"
        assert page.evaluate("document.activeElement.closest('form').dataset.process") == "nfv:1"
    finally:
        bed.ok("PUT", "/v1/nfvs/2/forward", {"action": "start"})
    wait_for(lambda: "nfv:2 (running)" in page.inner_text(card), 15, "the page to show nfv 2 running")


def test_unpatch_and_stop_from_the_page(page: Any, bed: Testbed) -> None:
    page.locator('button[aria-label="unpatch ring:2 to ring:0 on nfv:1"]').click()
    wait_for(
        lambda: bed.ok("GET", "/v1/nfvs/1").json()["patches"] == [{"src": "nullpmd:0", "dst": "ring:0"}],
        15,
        "the unpatch in GET /v1/nfvs/1 (the other patch kept)",
    )
    page.locator('button[aria-label="stop forwarding on nfv:2"]').click()
    wait_for(lambda: bed.ok("GET", "/v1/nfvs/2").json()["status"] == "idling", 15, "nfv 2 to stop")
    wait_for(lambda: "nfv:2 (idling)" in page.inner_text('.proc[data-process="nfv:2"] h3'), 15, "the page")
    assert page.locator('#graph g.edge.idle[data-process="nfv:2"]').count() >= 1  # drawn dashed
    page.locator('button[aria-label="start forwarding on nfv:2"]').click()
    wait_for(lambda: bed.ok("GET", "/v1/nfvs/2").json()["status"] == "running", 15, "nfv 2 to forward")


def test_a_failed_request_is_shown_in_the_page(page: Any) -> None:
    # A destination the page never offers, chosen and submitted in one step inside the page:
    # the page re-renders its cards as status changes, and a re-render between separate steps
    # would put the real options back (a valid patch, no error to show).
    page.evaluate(
        """() => {
            const form = document.querySelector('.proc[data-process="nfv:1"] form');
            form.elements.src.value = 'ring:2';
            form.elements.dst.options[0].value = 'ring:9';
            form.elements.dst.value = 'ring:9';
            form.requestSubmit(form.querySelector('button[type="submit"]'));
        }"""
    )
    wait_for(lambda: "400" in page.inner_text("#message"), 15, "the error in the page")
    assert page.get_attribute("#message", "class") == "error"


def run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on an event loop of its own thread (Playwright's sync API owns this one's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def ws_session(bed: Testbed, messages: list[Any]) -> list[dict[str, Any]]:
    """Send ``messages`` (str or bytes) on the page's websocket, then a refresh; return what came."""
    url = f"http://127.0.0.1:{bed.api_port}/web/ws"
    got: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Origin": f"http://127.0.0.1:{bed.api_port}"}) as ws,
    ):
        first = await ws.receive_json(timeout=15)
        got.append(first)
        for m in messages:
            await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
        await ws.send_str(json.dumps({"type": "refresh"}))
        while len(got) < 4:
            msg = await ws.receive(timeout=15)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            got.append(json.loads(msg.data))
    return got


def test_bad_websocket_messages_are_ignored(page: Any, bed: Testbed) -> None:
    bad = [
        "not json",
        b"\x00\xff binary",
        "[1, 2, 3]",
        '{"type": "patch", "src": "ring:0"}',
        "{" * 2000,
        "null",
        "x" * 8000,  # over 4 KiB: ignored, the socket stays open (aiohttp closed it before)
        json.dumps({"type": "refresh", "pad": "x" * 5000}),
        b"\x01" * 20000,
    ]
    got = run_apart(ws_session(bed, bad))
    assert got[0]["type"] == "topology"
    assert {m["type"] for m in got[1:]} <= {"rates", "topology"}
    assert any(m["type"] == "rates" for m in got)
    # Nothing changed, the server and the page are fine.
    assert bed.ok("GET", "/v1/nfvs/1").json()["patches"] == [{"src": "nullpmd:0", "dst": "ring:0"}]
    assert page.inner_text("#conn") == "live"


async def send_huge(bed: Testbed) -> tuple[aiohttp.WSMsgType, int | None]:
    """Send one message over MAX_READ; return how the server answered: the close and its code."""
    url = f"http://127.0.0.1:{bed.api_port}/web/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Origin": f"http://127.0.0.1:{bed.api_port}"}) as ws,
    ):
        await ws.receive_json(timeout=15)
        await ws.send_str("x" * (MAX_READ + 1))
        while True:
            msg = await ws.receive(timeout=15)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return msg.type, ws.close_code


def test_a_message_too_big_to_read_closes_with_1009(bed: Testbed) -> None:
    kind, code = run_apart(send_huge(bed))
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG == 1009
    assert bed.ok("GET", "/v1/nfvs/1").json()["patches"] == [{"src": "nullpmd:0", "dst": "ring:0"}]


async def handshake_status(bed: Testbed, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"http://127.0.0.1:{bed.api_port}/web/ws", headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as e:
            return e.status


def test_websocket_from_another_origin_or_host_is_refused(bed: Testbed) -> None:
    assert run_apart(handshake_status(bed, {"Origin": "http://evil.example"})) == 403
    assert run_apart(handshake_status(bed, {"Host": "evil.example"})) == 403
    r = bed.http.put("/v1/nfvs/1/forward", json={"action": "stop"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403  # the page's own controls go through the same guard


def test_every_asset_comes_from_spp_ctl(bed: Testbed) -> None:
    html = bed.http.get("/").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/web/") for r in refs), refs
    for ref in refs:
        r = bed.http.get(ref)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
    js = bed.http.get("/web/app.js").text
    assert "http://" not in js.replace('"https:" ? "wss://" : "ws://"', "") and "https://" not in js
    assert bed.http.get("/web/nothing.js").status_code == 404


def test_topo_http_prints_the_page_and_opens_browser(bed: Testbed, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$@" > {opened}\n')
    browser.chmod(0o755)
    url = f"http://127.0.0.1:{bed.api_port}/"
    cmd = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}", "-e", "topo http"]
    env = {**cli_env(tmp_path), "BROWSER": str(browser)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Web page: {url} (opened with {browser})"
    wait_for(lambda: opened.exists() and opened.read_text().strip() == url, 10, "$BROWSER to be run")
    env.pop("BROWSER")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.stdout.strip() == f"Web page: {url} (set $BROWSER to have 'topo http' open it)"


def test_topo_svg_and_mermaid_of_the_running_panel(bed: Testbed, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    r = subprocess.run([*cmd, "-e", "topo net.svg", "-e", "topo net.mmd"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env=cli_env(tmp_path), stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Create topology: 'net.svg'", "Create topology: 'net.mmd'"]
    svg = (tmp_path / "net.svg").read_text()
    for name in ("nfv:1", "nfv:2", "nullpmd:0", "ring:0", "nullpmd:1"):
        assert f">{name}</text>" in svg, name
    assert "port_nullpmd_0 -->|nfv:1| port_ring_0" in (tmp_path / "net.mmd").read_text()
