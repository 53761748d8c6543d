"""The patch-panel commands shared by spp_nfv and the primary's forwarder.

Replies keep SPP's JSON shapes (``{"result":"succeeded","command":"add","port":"ring:0"}``) and add
a ``"message"`` on failure, which spp-ctl turns into a 400 with that text.
"""

from __future__ import annotations

from typing import Any

from spp.engine.patchpanel import PatchPanel, PatchPanelError

Reply = dict[str, Any]


def succeeded(command: str, **extra: Any) -> Reply:
    return {"result": "succeeded", "command": command, **extra}


def failed(command: str, message: str, **extra: Any) -> Reply:
    return {"result": "failed", "command": command, **extra, "message": message}


def usage(command: str, syntax: str) -> Reply:
    return failed(command, f"usage: {syntax}")


PANEL_COMMANDS = ("add", "del", "patch", "forward", "stop")


def run_panel_command(panel: PatchPanel, tokens: list[str]) -> Reply:
    """Execute ``add|del|patch|forward|stop`` on ``panel``; never raises for user errors."""
    cmd = tokens[0]
    try:
        if cmd == "add":
            if len(tokens) != 2:
                return usage(cmd, "add PORT")
            return succeeded(cmd, port=str(panel.add(tokens[1])))
        if cmd == "del":
            if len(tokens) != 2:
                return usage(cmd, "del PORT")
            return succeeded(cmd, port=str(panel.delete(tokens[1])))
        if cmd == "patch":
            if tokens[1:] == ["reset"]:
                panel.reset()
                return succeeded("patch reset")
            if len(tokens) != 3:
                return usage(cmd, "patch SRC DST | patch reset")
            panel.patch(tokens[1], tokens[2])
            return succeeded(cmd, ports={"src": tokens[1], "dst": tokens[2]})
        if cmd == "forward":
            panel.forward()
            return succeeded(cmd)
        if cmd == "stop":
            panel.stop()
            return succeeded(cmd)
    except PatchPanelError as e:
        extra: dict[str, Any] = {}
        if cmd in ("add", "del") and len(tokens) > 1:
            extra["port"] = tokens[1]
        elif cmd == "patch" and len(tokens) == 3:
            extra["ports"] = {"src": tokens[1], "dst": tokens[2]}
        return failed(cmd, str(e), **extra)
    except TimeoutError as e:
        return failed(cmd, str(e))
    return failed(cmd, f"unknown command '{cmd}'")
