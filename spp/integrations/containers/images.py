"""``sppc build``: the container image, from Debian packages and this project only.

Two layers, each named by a hash of what goes into it, so an unchanged input is never rebuilt:

1. **base** ``localhost/spp-debian-base:<hash>``: ``mmdebstrap`` makes a Debian 12 root
   (``--variant=apt``, no recommends) with python3, python3-venv, dpdk-dev (dpdk-testpmd),
   iproute2 and procps, packed as a tarball and imported (``podman import`` / ``docker import``).
   Its hash covers the suite and the package list. Network: the Debian mirror only.
2. **spp** ``localhost/spp-sppc:<hash>`` (also tagged ``:latest``): a Containerfile ``FROM`` the
   base that installs wheels of this project and its dependencies into ``/opt/spp`` (on PATH)
   with ``pip --no-index``. The wheels are made on the host (``pip wheel``, PyPI as the only
   index), and the build itself runs with ``--network none``. Its hash covers the base, the
   project's source files, pyproject.toml and the checkout's path (labelled ``spp.sppc.tree``):
   a build untags this checkout's older images only, never another checkout's.

:func:`plan` says what would be built (names, hashes, commands) with no side effects
(``--dry-run``); :func:`build` builds what is missing and returns the image name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from spp.integrations.containers.engine import Engine, EngineError

IMAGE_REPO = "localhost/spp-sppc"
DEFAULT_IMAGE = f"{IMAGE_REPO}:latest"
BASE_REPO = "localhost/spp-debian-base"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "dpdk-dev", "iproute2", "procps")
RECIPE_VERSION = "1"  # bump when the build steps change what an image holds

CONTAINERFILE = """\
FROM {base}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/spp \\
 && /opt/spp/bin/pip install -q --no-index --find-links /tmp/wheels soft-patch-panel \\
 && rm -rf /tmp/wheels /root/.cache
ENV PATH=/opt/spp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL spp.sppc.source={source}
LABEL spp.sppc.tree={tree}
WORKDIR /root
"""


class BuildError(RuntimeError):
    """The image cannot be built; the message names the step."""


@dataclass
class Plan:
    base: str
    image: str
    project: Path
    mmdebstrap: list[str]
    tag_latest: bool = True

    def describe(self) -> str:
        return "\n".join(
            [
                f"base  {self.base}: {' '.join(self.mmdebstrap)}",
                f"image {self.image}: pip wheel {self.project} + Containerfile FROM the base",
            ]
        )


def project_root() -> Path:
    """The source tree this package was installed from (pyproject.toml beside ``spp/``)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").exists() or not (root / "spp").is_dir():
        raise BuildError(f"no source tree at {root}: sppc build needs a checkout (pip install -e)")
    return root


def source_hash(root: Path) -> str:
    """Hash of what the spp image installs: pyproject.toml and every file of the package."""
    h = hashlib.sha256()
    package = sorted(p for p in (root / "spp").rglob("*") if p.is_file())
    files = [root / "pyproject.toml", root / "README.md", *package]
    for path in files:
        if "__pycache__" in path.parts or not path.exists():
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def base_hash(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE) -> str:
    text = "\n".join([RECIPE_VERSION, suite, *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()


def mmdebstrap_argv(out: Path, packages: tuple[str, ...] = PACKAGES, mirror: str = MIRROR) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=apt",
        "--include=" + ",".join(packages),
        '--aptopt=Apt::Install-Recommends "false"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        SUITE,
        str(out),
        mirror,
    ]


def plan(image_repo: str = IMAGE_REPO, mirror: str = MIRROR) -> Plan:
    root = project_root()
    bh = base_hash()
    base = f"{BASE_REPO}:{bh[:12]}"
    # The tree's path is part of the name: each checkout owns its images and untags only its own
    # older ones (:func:`_forget_older`), so checkouts never remove what another one runs.
    ih = hashlib.sha256((bh + source_hash(root) + RECIPE_VERSION + str(root)).encode()).hexdigest()
    return Plan(base, f"{image_repo}:{ih[:12]}", root, mmdebstrap_argv(Path("<tmp>/root.tar"), mirror=mirror))


def build(
    engine: Engine, image_repo: str = IMAGE_REPO, mirror: str = MIRROR, log: object = sys.stderr
) -> str:
    """Build what is missing of :func:`plan`; returns the image name (also tagged ``:latest``).

    Builds on one machine take turns (a lock file in the temporary directory): two at once
    would both find the base missing and both run mmdebstrap, and the second to tag would
    replace what the first is about to use."""
    with open(Path(tempfile.gettempdir()) / "spp-sppc-build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(engine, image_repo, mirror, log)


def _build(engine: Engine, image_repo: str, mirror: str, log: object) -> str:
    p = plan(image_repo, mirror)

    def say(text: str) -> None:
        print(f"sppc build: {text}", file=log, flush=True)  # type: ignore[call-overload]

    for tool in ("mmdebstrap", engine.kind):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed (scripts/install.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="sppc-build-") as tmp:
        work = Path(tmp)
        if engine.image_exists(p.base):
            say(f"{p.base} exists")
        else:
            say(f"making {p.base} with mmdebstrap (Debian {SUITE})")
            tar = work / "root.tar"
            _run(mmdebstrap_argv(tar, mirror=mirror), "mmdebstrap", timeout=1800)
            _run(engine.command("import", str(tar), p.base), f"{engine.kind} import", timeout=600)
            tar.unlink()
        if engine.image_exists(p.image):
            say(f"{p.image} exists")
        else:
            say(f"making {p.image}")
            ctx = work / "ctx"
            (ctx / "wheels").mkdir(parents=True)
            # From a clean copy of exactly what the hash covers: a build/ left in the checkout
            # by an earlier setuptools run could otherwise put stale modules into the wheel.
            src = work / "src"
            shutil.copytree(p.project / "spp", src / "spp", ignore=shutil.ignore_patterns("__pycache__"))
            for name in ("pyproject.toml", "README.md"):
                if (p.project / name).exists():
                    shutil.copy2(p.project / name, src / name)
            _run(
                [sys.executable, "-m", "pip", "wheel", "-q", str(src), "-w", str(ctx / "wheels")],
                "pip wheel",
                timeout=900,
            )
            (ctx / "Containerfile").write_text(
                CONTAINERFILE.format(
                    base=p.base, source=p.image.split(":")[-1], tree=json.dumps(str(p.project))
                )
            )
            _run(
                engine.command(
                    "build", *engine.build_opts, "--network", "none", "-f", str(ctx / "Containerfile"),
                    "-t", p.image, str(ctx),
                ),
                f"{engine.kind} build",
                timeout=900,
            )  # fmt: skip
        _run(engine.command("tag", p.image, f"{image_repo}:latest"), f"{engine.kind} tag")
    _forget_older(engine, image_repo, p.image, p.project)
    return p.image


TREE_LABEL = "spp.sppc.tree"


def _forget_older(engine: Engine, repo: str, keep: str, tree: Path) -> None:
    """Untag earlier builds of ``repo`` from this source tree (one image per edit would pile
    up), and those of trees that no longer exist; an image a container still uses stays.

    Another checkout's images are left alone: two checkouts on one machine (a user's clone and
    a CI clone, say) each keep their own current image, even while both build and run."""
    out = subprocess.run(
        engine.command("images", "--format", "{{.Repository}}:{{.Tag}}", repo),
        capture_output=True,
        text=True,
    ).stdout
    for name in out.split():
        if name in (keep, f"{repo}:latest") or not name.startswith(repo + ":"):
            continue
        built_in = _label(engine, name, TREE_LABEL)
        if built_in is None or Path(built_in) == tree or not Path(built_in).exists():
            subprocess.run(engine.command("rmi", name), capture_output=True)


def _label(engine: Engine, image: str, key: str) -> str | None:
    """The value of label ``key`` of ``image``; None if it has none (built before the label)."""
    r = subprocess.run(
        engine.command("image", "inspect", "--format", "{{json .Config.Labels}}", image),
        capture_output=True,
        text=True,
    )
    try:
        labels = json.loads(r.stdout.strip().splitlines()[0]) if r.returncode == 0 else None
    except (json.JSONDecodeError, IndexError):
        return None
    value = labels.get(key) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else None


def _run(argv: list[str], what: str, timeout: float = 300) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} did not finish in {timeout:.0f} s") from None
    except FileNotFoundError:
        raise BuildError(f"{what}: {argv[0]} is not installed") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{what} failed ({r.returncode}): " + " | ".join(tail))


__all__ = ["DEFAULT_IMAGE", "BuildError", "EngineError", "Plan", "build", "plan"]
