"""The REST API's OpenAPI description (``GET /v1/openapi.json``) and a schemathesis fuzz from it.

The fuzz runs against a real spp-ctl driving real processes (primary, nfv, vf, mirror, pcap):
whatever schemathesis sends (valid, invalid, absurd), spp-ctl answers without a 5xx, with the
status codes and content types the document lists, and no process dies. Left out are the
operations whose job is to end or start a process (``DELETE`` of a process, ``launch``); their
input checks have tests of their own. It is bounded by ``--max-time``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.control.ctl.openapi import template
from spp.control.ctl.webapi import routes
from spp.integrations.testbed import Testbed, launch_pcap

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
ST = Path(sys.executable).with_name("st")
FUZZ_SECONDS = 60
ENDS_OR_STARTS_A_PROCESS = r"(_exit|_exit_again|primary_launch)$"


class HandlerNames:
    """Stands in for the Api: each handler is its name, enough to list the routes."""

    def __getattr__(self, name: str) -> str:
        return name


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Testbed]:
    with Testbed(nb_rings=4, log_dir=tmp_path_factory.mktemp("logs")) as b:
        b.launch_nfv(1)
        b.launch_vf(2)
        b.launch_mirror(3)
        launch_pcap(b, 4, "ring:3", tmp_path_factory.mktemp("caps"))
        yield b


def test_openapi_describes_every_route_with_its_body_and_replies(bed):
    res = bed.http.get("/v1/openapi.json")
    assert res.status_code == 200 and res.headers["Content-Type"].startswith("application/json")
    doc = res.json()
    assert doc["openapi"].startswith("3.")
    table = routes(HandlerNames())  # type: ignore[arg-type]
    served = {(method.lower(), template(path)): handler for method, path, handler in table}
    described = {(m, path): op for path, item in doc["paths"].items() for m, op in item.items()}
    assert set(served) == set(described)
    for key, op in described.items():
        assert op["operationId"].startswith(served[key]), key
        codes = set(op["responses"])
        assert {"400", "403", "404", "503"} <= codes, key
        assert codes & {"200", "204"}, key
        takes_body = key[0] in ("put", "post")
        assert ("requestBody" in op) == takes_body, key
        if takes_body:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"], key


def test_schemathesis_fuzz_finds_no_server_error_and_kills_nothing(bed, tmp_path):
    listed = bed.processes()
    assert len(listed) == 5
    cmd = [
        str(ST), "run", f"http://127.0.0.1:{bed.api_port}/v1/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
        "--max-time", str(FUZZ_SECONDS), "--max-examples", "25", "--seed", "20261207",
        "--workers", "1", "--request-timeout", "30", "--suppress-health-check", "all",
        "--exclude-operation-id-regex", ENDS_OR_STARTS_A_PROCESS,
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), NO_COLOR="1")
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=FUZZ_SECONDS * 5, cwd=tmp_path
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert counts and int(counts[1]) >= 300 and counts[1] == counts[2], out.stdout[-3000:]
    assert all(p.poll() is None for p in bed.procs.values()), {n: p.poll() for n, p in bed.procs.items()}
    assert bed.processes() == listed  # every process still registered and answering
