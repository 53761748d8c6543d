"""Bed files: the safe loader, the schema and its errors (file, line, key path), the example
beds, and the check-only modes (``spp validate``, ``spp up --dry-run``) having no side effects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spp.integrations.bed.check import load_bed, parse_bed
from spp.integrations.bed.cli import main as bed_main
from spp.integrations.bed.plan import plan
from spp.integrations.bed.yamlsafe import BedFileError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))

GOOD = """\
name: good
primary:
  lcores: 0
  rings: 4
  interfaces: [va0, vb0]
namespaces:
  - {name: a, outer: va0, address: 10.0.0.1/24}
secondaries:
  - nfv: 1
    ports: [ring:0, vhost:1]
    patches: ["phy:0 -> ring:0", "ring:0 -> phy:1"]
vms:
  - id: 1
    nics: [{port: vhost:1}]
"""

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
)

# (id, file text, line, key path, words the message must contain)
BAD = [
    ("empty", "", 1, "", "empty"),
    ("comments-only", "# nothing\n", 1, "", "empty"),
    ("python-tag", "primary: !!python/object/apply:os.system [true]\n", 1, "", "tag"),
    ("local-tag", "name: x\nprimary: !bed {}\n", 2, "", "tag '!bed'"),
    ("str-tag", "name: !!str x\nprimary: {}\n", 1, "", "tag"),
    ("duplicate-key", "primary: {}\nname: a\nname: b\n", 3, "name", "duplicate key 'name' (first on line 2)"),
    ("nested-duplicate", "primary:\n  rings: 2\n  rings: 4\n", 3, "primary.rings", "duplicate key"),
    ("alias-bomb", BOMB + "primary: {}\n", 1, "", "alias"),
    ("two-documents", "primary: {}\n---\nprimary: {}\n", 2, "", "one YAML document"),
    ("syntax", "primary:\n  rings: [1, 2\nname: x\n", 3, "", "not valid YAML"),
    ("not-a-mapping", "- primary\n", 1, "", "mapping of sections"),
    ("unknown-section", "primary: {}\nprimery: {}\n", 2, "primery", "unknown field"),
    ("missing-primary", "name: x\n", 1, "primary", "required field is missing"),
    ("wrong-type", "primary:\n  rings: many\n", 2, "primary.rings", "integer"),
    ("ring-size", "primary:\n  ring_size: 1000\n", 2, "primary.ring_size", "power of two"),
    ("api-port", "ctl:\n  api_port: 70000\nprimary: {}\n", 2, "ctl.api_port", "65535"),
    ("ctl-host", "ctl:\n  host: localhost\nprimary: {}\n", 2, "ctl.host", "IP address"),
    ("file-prefix", "file_prefix: ../x\nprimary: {}\n", 1, "file_prefix", "invalid file prefix"),
    (
        "lcores",
        "primary: {}\nsecondaries:\n  - nfv: 1\n    lcores: a,b\n",
        4,
        "secondaries[0].lcores",
        "lcore",
    ),
    (
        "bad-port-name",
        "primary: {}\nsecondaries:\n  - nfv: 1\n    ports: [rong:0]\n",
        4,
        "secondaries[0].ports[0]",
        "unknown type 'rong'",
    ),
    (
        "patch-without-arrow",
        "primary: {}\nsecondaries:\n  - nfv: 1\n    ports: [ring:0]\n    patches:\n      - ring:0 ring:1\n",
        6,
        "secondaries[0].patches[0]",
        "'ring:0 -> phy:1'",
    ),
    (
        "patch-port-not-added",
        "primary: {rings: 2}\nsecondaries:\n  - nfv: 1\n    ports: [ring:0]\n    patches:\n"
        "      - ring:0 -> ring:0\n      - ring:1 -> ring:0\n",
        7,
        "secondaries[0].patches[1]",
        "ring:1 is not among this nfv's ports",
    ),
    (
        "ring-out-of-range",
        "primary: {rings: 2}\nsecondaries:\n  - nfv: 1\n    ports: [ring:0, ring:5]\n",
        4,
        "secondaries[0].ports[1]",
        "2 ring(s)",
    ),
    (
        "phy-out-of-range",
        "primary:\n  interfaces: [v0]\nsecondaries:\n  - nfv: 1\n    ports: [ring:0]\n"
        "    patches: [phy:1 -> ring:0]\n",
        6,
        "secondaries[0].patches[0]",
        "1 interface(s)",
    ),
    (
        "duplicate-secondary-id",
        "primary: {}\nsecondaries:\n  - nfv: 1\n  - vf: 1\n",
        4,
        "secondaries[1].vf",
        "id 1 is used twice",
    ),
    (
        "two-kinds",
        "primary: {}\nsecondaries:\n  - nfv: 1\n    vf: 2\n",
        3,
        "secondaries[0]",
        "exactly one of",
    ),
    (
        "field-of-other-kind",
        "primary: {}\nsecondaries:\n  - nfv: 1\n    components: []\n",
        4,
        "secondaries[0].components",
        "not a field of nfv",
    ),
    (
        "component-type",
        "primary: {}\nsecondaries:\n  - vf: 1\n    lcores: 0-2\n    components:\n"
        "      - name: c\n        type: classify\n        core: 1\n",
        7,
        "secondaries[0].components[0].type",
        "'classify'",
    ),
    (
        "component-core",
        "primary: {}\nsecondaries:\n  - vf: 1\n    lcores: 0,1\n    components:\n"
        "      - name: c\n        type: forward\n        core: 5\n",
        8,
        "secondaries[0].components[0].core",
        "core 5",
    ),
    (
        "vm-nic-not-a-port",
        "primary: {}\nvms:\n  - id: 1\n    nics:\n      - port: vhost:3\n",
        5,
        "vms[0].nics[0].port",
        "vhost:3 is not a port of any nfv",
    ),
    (
        "namespace-address",
        "primary: {}\nnamespaces:\n  - name: a\n    outer: va0\n    address: 10.0.0.300/24\n",
        5,
        "namespaces[0].address",
        "ADDR/PREFIX",
    ),
    (
        "interface-name-too-long",
        "primary:\n  interfaces: [averyveryverylongname]\n",
        2,
        "primary.interfaces[0]",
        "interface name",
    ),
    (
        "container-device",
        "primary: {}\ncontainers:\n  - name: c\n    app: testpmd\n    dev_uids: [ring:0]\n",
        5,
        "containers[0].dev_uids[0]",
        "vhost:N, memif:N or tap:N",
    ),
    (
        "container-app",
        "primary: {}\ncontainers:\n  - name: c\n    app: nginx\n",
        4,
        "containers[0].app",
        "spp-pktgen",
    ),
    (
        "restart-policy",
        "restart: sometimes\nprimary: {}\n",
        1,
        "restart",
        "on-failure",
    ),
]


def test_a_good_bed_loads() -> None:
    bed = parse_bed(GOOD, "good.yml")
    assert [s.name for s in bed.secondaries] == ["nfv 1"]
    assert bed.secondaries[0].patches[0].src == "phy:0"
    assert [s.text for s in plan(None, bed)][:3] == [
        "create namespace a (va0 <-> eth0)",
        "start spp-ctl",
        "start primary",
    ]


@pytest.mark.parametrize(("text", "line", "path", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_bed_is_refused_with_line_and_field(text: str, line: int, path: str, words: str) -> None:
    with pytest.raises(BedFileError) as info:
        parse_bed(text, "bad.yml")
    first = info.value.errors[0]
    assert str(first).startswith(f"bad.yml:{line}: " + (f"{path}: " if path else "")), str(info.value)
    assert words in str(first), str(info.value)


def test_there_are_at_least_20_kinds_of_bad_files() -> None:
    assert len(BAD) >= 20


def test_every_problem_is_reported_at_once() -> None:
    text = "primary:\n  rings: many\n  ring_size: 3\nctl:\n  api_port: 0\n"
    with pytest.raises(BedFileError) as info:
        parse_bed(text, "bad.yml")
    assert [e.line for e in info.value.errors] == [2, 3, 5]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_beds_are_valid(path: Path) -> None:
    bed = load_bed(str(path))
    assert plan(None, bed), "an example starts something"
    assert plan(bed, bed) == [], "applying a bed to itself changes nothing"
    assert [s.text for s in plan(bed, None)][-1].startswith(("stop spp-ctl", "remove namespace"))


def test_the_readme_names_every_example_with_its_up_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in EXAMPLES:
        assert f"spp up examples/{path.name}" in readme, path.name


def test_validate_and_dry_run_have_no_side_effects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    for path in EXAMPLES:  # VM and container beds too, without images
        assert bed_main(["validate", str(path)]) == 0
        assert bed_main(["up", "--dry-run", "--state-dir", str(state), str(path)]) == 0
    out = capsys.readouterr().out
    assert "-m spp.processes.primary" in out and "qemu-system-x86_64" in out
    assert not state.exists()


def test_spp_validate_from_the_command_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("primary:\n  rings: 4\nsecondaries:\n  - nfv: 1\n    patchs: []\n")
    r = subprocess.run(
        [sys.executable, "-m", "spp.control.cli.main", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SPP_BED_DIR": str(tmp_path / "state")},
    )
    assert r.returncode == 1
    assert r.stderr.strip() == f"{bad}:5: secondaries[0].patchs: unknown field"


def test_ps_and_down_without_a_bed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path / "none")]
    assert bed_main(["ps", *state]) == 0
    assert bed_main(["ps", "--json", *state]) == 0
    assert bed_main(["down", *state]) == 0
    out = capsys.readouterr().out
    assert "no bed is running" in out and "[]" in out


def test_the_user_guide_example_is_a_valid_bed() -> None:
    guide = (ROOT / "docs" / "USER_GUIDE.md").read_text()
    section = guide[guide.index("## A whole bed from one file") :]
    text = section[section.index("```text\n") + 8 :]
    bed = parse_bed(text[: text.index("```")], "USER_GUIDE.md")
    assert [s.name for s in bed.secondaries] == ["nfv 1", "vf 2", "mirror 3", "pcap 4"]


def test_container_options_are_checked_by_sppc(tmp_path: Path) -> None:
    pytest.importorskip("spp.integrations.containers", reason="sppc is not in this tree yet")
    text = (
        "primary: {}\nsecondaries:\n  - nfv: 1\n    ports: [vhost:1]\ncontainers:\n"
        "  - name: tp\n    app: testpmd\n    dev_uids: [vhost:1]\n    args: [--forward-mode, bogus]\n"
    )
    with pytest.raises(BedFileError) as info:
        parse_bed(text, "bad.yml")
    assert str(info.value).startswith("bad.yml:9: containers[0].args: container tp: "), str(info.value)
    bed = load_bed(str(ROOT / "examples" / "containers.yml"))
    from spp.integrations.bed.guests import container_launch

    launch = container_launch(bed, bed.containers[0])
    assert "--name" in launch.argv and "sppc-containers-pktgen" in launch.argv


VF = """\
primary: {rings: 8, interfaces: [v0]}
secondaries:
  - nfv: 1
    ports: [ring:0, ring:1, ring:2]
    patches: [phy:0 -> ring:0, ring:1 -> ring:2]
  - vf: 2
    lcores: 0-3
    components:
      - {name: cls, type: classifier, core: 1, rx: [ring:0], tx: [ring:3, ring:4]}
      - {name: fwd, type: forward, core: 2, rx: [ring:3], tx: [ring:5]}
    classifier_table:
      - {mac: "52:54:00:00:00:01", port: ring:3}
"""


def _steps(old: str, new: str) -> list[str]:
    return [s.text for s in plan(parse_bed(old), parse_bed(new))]


def test_plan_changes_only_what_changed() -> None:
    # a classifier entry and a component's output change; everything else stays
    new = VF.replace('"52:54:00:00:00:01", port: ring:3', '"52:54:00:00:00:02", port: ring:4')
    new = new.replace("rx: [ring:3], tx: [ring:5]", "rx: [ring:3], tx: [ring:6]")
    assert _steps(VF, new) == [
        "vf 2: classifier_table del mac 52:54:00:00:00:01 ring:3",
        "vf 2: port del ring:5 tx fwd",
        "vf 2: port add ring:6 tx fwd",
        "vf 2: classifier_table add mac 52:54:00:00:00:02 ring:4",
    ]
    # a component moved to another core is stopped and started again; a patch is overwritten in place
    moved = VF.replace("type: forward, core: 2", "type: forward, core: 3")
    moved = moved.replace("ring:1 -> ring:2", "ring:1 -> ring:0")
    assert _steps(VF, moved) == [
        "vf 2: component stop fwd",
        "vf 2: component start fwd",
        "vf 2: port add ring:3 rx fwd",
        "vf 2: port add ring:5 tx fwd",
        "nfv 1: patch ring:1 -> ring:0",
    ]
    # dropping a patch whose ports stay needs nfv's patch reset, and the others are put back
    dropped = VF.replace("patches: [phy:0 -> ring:0, ring:1 -> ring:2]", "patches: [phy:0 -> ring:0]")
    assert _steps(VF, dropped) == ["nfv 1: patch reset (to drop ring:1)", "nfv 1: patch phy:0 -> ring:0"]
    # a port removed takes its patch with it: no reset
    gone = VF.replace("ports: [ring:0, ring:1, ring:2]", "ports: [ring:0, ring:1]")
    gone = gone.replace(", ring:1 -> ring:2]", "]")
    assert _steps(VF, gone) == ["nfv 1: del ring:2"]
    # new lcores restart the process, which gets all its wiring again
    relcored = VF.replace("lcores: 0-3", "lcores: 0-4")
    assert _steps(VF, relcored)[:2] == ["stop vf 2", "start vf 2"]
    assert len(_steps(VF, relcored)) == 2 + 7 + 1
    # the primary changing restarts everything
    assert _steps(VF, VF.replace("rings: 8", "rings: 16"))[0].startswith("spp-ctl or the primary changed")
