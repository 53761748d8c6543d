"""Every command and example in README.md and docs/*.md runs, so none of them can rot.

Each document runs in namespaces of its own (network, mount, PID: see tests/docrun.py), with
real processes on SPP's default ports; blocks that cannot run are marked in the Markdown and
listed here, so a new unmarked block is run and a newly skipped one is noticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

#: (document, first words of the reason) of every block that is marked as not run.
KNOWN_SKIPS = {
    ("README.md", "sets up the machine"),
    ("USER_GUIDE.md", "sets up the machine"),
}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network, mount and PID namespaces")


def run_document(doc: Path) -> list[dict[str, object]]:
    argv = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc"]
    argv += [sys.executable, "-m", "tests.docrun", str(doc)]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_block_of_the_document_runs(doc: Path) -> None:
    results = run_document(doc)
    failed = [
        f"{Path(r['doc']).name}:{r['line']} ({r['lang']}): {r['detail']}"
        for r in results
        if r["status"] == "failed"
    ]
    assert not failed, "\n\n".join(failed)
    skipped = {(doc.name, str(r["detail"])) for r in results if r["status"] == "skipped"}
    known = {k for k in KNOWN_SKIPS if k[0] == doc.name}
    assert {
        (d, next((k[1] for k in known if reason.startswith(k[1])), reason)) for d, reason in skipped
    } == known
    if doc.name in ("README.md", "USER_GUIDE.md"):
        assert sum(r["status"] == "ok" for r in results) >= 3  # it really ran something


@pytest.mark.root
@needs_root
@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("```sh\nspp-ctl -b 127.0.0.1\n```\n\n"
         "```spp\nspp > status\n- spp-ctl:\n  - address: 127.0.0.1:9999\n```\n",
         "  - address: 127.0.0.1:7777"),
        ("```console\n$ echo hello\nhallo\n```\n", "hello"),
        ("```sh\nfalse\n```\n", "exited with 1"),
        ("```\nuntagged\n```\n", "is not one of"),
    ],
    ids=["wrong-cli-output", "wrong-shell-output", "failing-command", "untagged-fence"],
)  # fmt: skip
def test_runner_catches_a_wrong_example(tmp_path: Path, markdown: str, expected: str) -> None:
    """The runner is not a rubber stamp."""
    doc = tmp_path / "bad.md"
    doc.write_text(markdown)
    results = run_document(doc)
    assert results[-1]["status"] == "failed"
    assert expected in str(results[-1]["detail"])


def test_rest_reference_is_current() -> None:
    """docs/USER_GUIDE.md's REST reference is what scripts/gen-rest-doc.py makes of the API today."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-rest-doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + "\n(run scripts/gen-rest-doc.py and commit docs/USER_GUIDE.md)"


def test_rest_reference_covers_every_route() -> None:
    from spp.control.ctl import webapi

    class Names:
        def __getattr__(self, name: str) -> str:
            return name

    guide = (ROOT / "docs" / "USER_GUIDE.md").read_text()
    for method, path, _ in webapi.routes(Names()):  # type: ignore[arg-type]
        shown = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)
        assert f"### `{method} {shown}`" in guide, (method, path)


def test_user_documents_have_no_internal_references() -> None:
    internal = re.compile(r"§|\bspp-api\b|\bspec\b|/work/|\bseeds?\b", re.IGNORECASE)
    for doc in (ROOT / "README.md", ROOT / "docs" / "USER_GUIDE.md"):
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            assert not internal.search(line), f"{doc.name}:{n}: {line}"


def test_user_guide_lists_every_cli_command() -> None:
    from spp.control.cli.shell import Shell

    guide = (ROOT / "docs" / "USER_GUIDE.md").read_text()
    table = guide.split("### Every command at a glance", 1)[1].split("\n### ", 1)[0]
    commands = {n[3:] for n in dir(Shell) if n.startswith("do_") and n != "do_EOF"}
    missing = sorted(c for c in commands if f"`{c}" not in table)
    assert not missing, missing


def test_rest_reference_from_an_openapi_document() -> None:
    """Once spp-ctl serves /v1/openapi.json the reference comes from it: summaries, body fields
    (required or not, enums, examples) and every error status with its meaning."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_rest_doc", ROOT / "scripts" / "gen-rest-doc.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    schema_p = "#/components/schemas/P"
    document = {
        "paths": {
            "/v1/nfvs/{sec_id}/ports": {
                "put": {
                    "summary": "add or delete a port",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": schema_p}}}},
                    "responses": {"204": {"description": "Done"}, "404": {"description": "No such nfv."}},
                }
            }
        },
        "components": {
            "schemas": {
                "P": {
                    "type": "object",
                    "required": ["action", "port"],
                    "properties": {
                        "action": {"type": "string", "enum": ["add", "del"]},
                        "port": {"type": "string", "example": "ring:0"},
                        "note": {"type": "string"},
                    },
                }
            }
        },
    }
    text = gen.render(document)
    assert "Generated from `GET /v1/openapi.json`" in text
    assert "### `PUT /v1/nfvs/{sec_id}/ports`\n\nAdd or delete a port.\n" in text
    fields = "`action`: `add` \\| `del`; `port`: string, e.g. `ring:0`; `note` (optional): string."
    assert f"Body fields: {fields}" in text
    assert 'Example body: `{"action": "add", "port": "ring:0"}`' in text  # the hand-written example
    assert "* 404: No such nfv." in text
    assert "Reply: 204 (no content)." in text
