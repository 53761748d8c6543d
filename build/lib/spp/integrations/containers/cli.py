"""``sppc``: SPP's container tools (build images, launch apps in containers on the panel's ports).

::

    sppc build [--dry-run] [--engine podman|docker]      the image, from Debian packages + this project
    sppc app APP [options] [-- app options]              run APP in a container (--dry-run: print only)
    sppc ps [--json]                                     the containers sppc started
    sppc stop NAME... | --all                            stop and remove them
    sppc dockerd start|stop                              a dockerd of sppc's own (docker engine)

APP is one of spp-primary, spp-nfv, spp-vf, spp-mirror, spp-pcap, spp-pktgen, spp-l2fwd, testpmd,
generic ('sppc app APP -h' lists its options). Example: two tools on an nfv's vhost:1 and vhost:2

    sppc app spp-l2fwd -l 1 -d vhost:2,vhost:3 -p 0x3 --name l2fwd1
    sppc app spp-pktgen -d vhost:1 --name pg1 -- --count 10000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from spp.console import quiet_broken_pipe
from spp.integrations.containers import engine as eng
from spp.integrations.containers import images, launch

USAGE = (__doc__ or "").split("::", 1)[-1]


def _engine(args: argparse.Namespace) -> eng.Engine:
    return eng.Engine.named(getattr(args, "engine", None), getattr(args, "runtime", None))


def cmd_app(words: list[str]) -> int:
    if not words or words[0] in ("-h", "--help"):
        print("usage: sppc app APP [options] [-- app options]\n\nAPP: " + ", ".join(launch.APPS))
        return 0 if words else 2
    app, rest = words[0], words[1:]
    try:
        la = launch.build(app, rest)
    except launch.SppcError as e:
        print(f"sppc: error: {e}", file=sys.stderr)
        return 2
    if la.dry_run:
        print(la.shell())
        return 0
    if la.mode != "detach":
        os.execvp(la.argv[0], la.argv)  # foreground: the engine owns the terminal from here
    cid = launch.start(la)
    print(f"{la.name} {cid[:12]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sppc",
        description="SPP's container tools: images from Debian packages and this project, apps in "
        "containers wired to the panel's vhost ports (podman with runc, or docker).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=USAGE,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="build the image (cached by content hash)")
    b.add_argument("--dry-run", action="store_true", help="print what would be built, build nothing")
    b.add_argument("-ci", "--container-image", default=images.IMAGE_REPO, help="image name (no tag)")
    b.add_argument("--mirror", default=images.MIRROR, help="Debian mirror (default %(default)s)")
    sub.add_parser("app", help="run an app in a container (sppc app APP -h)", add_help=False)
    ps = sub.add_parser("ps", help="list the containers sppc started")
    ps.add_argument("--json", action="store_true")
    st = sub.add_parser("stop", help="stop and remove containers by name")
    st.add_argument("names", nargs="*")
    st.add_argument("--all", action="store_true", help="every container sppc started")
    d = sub.add_parser("dockerd", help="start or stop sppc's own dockerd")
    d.add_argument("action", choices=("start", "stop", "status"))
    for sp in (b, ps, st):
        sp.add_argument("--engine", choices=("podman", "docker"))
        sp.add_argument("--runtime", help="podman's OCI runtime (default runc)")
    return p


def run(argv: list[str]) -> int:
    if argv[:1] == ["app"]:
        return cmd_app(argv[1:])
    args = build_parser().parse_args(argv)
    if args.cmd == "build":
        if args.dry_run:
            print(images.plan(args.container_image, args.mirror).describe())
            return 0
        name = images.build(_engine(args), args.container_image, args.mirror)
        print(name)
        return 0
    if args.cmd == "ps":
        rows = _engine(args).ours()
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in [] if args.json else rows:
            print(f"{r['name']}\t{r['state']}")
        return 0
    if args.cmd == "stop":
        e = _engine(args)
        names = [r["name"] for r in e.ours()] if args.all else args.names
        if not names:
            print("sppc: error: stop needs NAME... or --all", file=sys.stderr)
            return 2
        missing = [n for n in names if not e.remove(n)]
        for n in missing:
            print(f"sppc: no container '{n}'", file=sys.stderr)
        return 1 if missing else 0
    if args.action == "start":
        print(f"dockerd pid {eng.start_dockerd()} ({eng.DOCKERD_RUN / 'docker.sock'})")
    elif args.action == "stop":
        print("dockerd stopped" if eng.stop_dockerd() else "dockerd was not running")
    else:
        pid = eng.dockerd_pid()
        print(f"dockerd pid {pid}" if pid else "dockerd is not running")
    return 0


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (eng.EngineError, images.BuildError, launch.SppcError) as e:
        print(f"sppc: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
