"""Whether a window can open, checked without asking the GUI toolkit (which aborts the process when it cannot).

A GUI build of OpenCV (Qt or GTK) started without a reachable display calls ``abort()``: exit
134, SIGABRT, and its one message swallowed with the rest of native stderr. So the display is
checked first, the way the toolkits look for it: ``WAYLAND_DISPLAY`` (a socket in
``XDG_RUNTIME_DIR``) or ``DISPLAY`` (an X11 socket, local or TCP), and only then OpenCV's build.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import cv2

from metasr.core.errors import OutputError

__all__ = ["check_display_reachable", "display_problem"]

_X11_BASE_PORT = 6000


def _x11_reachable(display: str) -> bool:
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix") or host.startswith("/"):
        path = host if host.startswith("/") else f"/tmp/.X11-unix/X{number}"
        target: str | tuple[str, int] = path
        family = socket.AF_UNIX
    else:
        target, family = (host, _X11_BASE_PORT + int(number)), socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(target)
    except OSError:
        return False
    return True


def _wayland_reachable(env: Mapping[str, str]) -> bool:
    name = env.get("WAYLAND_DISPLAY", "")
    path = Path(name) if name.startswith("/") else Path(env.get("XDG_RUNTIME_DIR", "/nonexistent")) / name
    return bool(name) and path.exists()


def display_problem(env: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why no window can open on this machine (one sentence), or ``None`` when one can."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    gui = [line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines() if "GUI:" in line]
    if gui and gui[0].upper() == "NONE":
        return (
            "this OpenCV has no GUI (opencv-python-headless); pip install opencv-python for a window, "
            "or write to --output instead"
        )
    if not platform.startswith("linux"):
        return None
    if env.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc", "eglfs", "linuxfb"):
        return None  # Qt told to draw without X11/Wayland
    if _wayland_reachable(env):
        return None
    display = env.get("DISPLAY", "")
    if not display:
        return (
            "no display: DISPLAY and WAYLAND_DISPLAY are not set (a server or an SSH session without -X); use --output"
        )
    if not _x11_reachable(display):
        return f"no display: the X server DISPLAY={display} does not answer; use --output"
    return None


def check_display_reachable() -> None:
    """Raise :class:`OutputError` (``--display ...``) unless a window can open."""
    problem = display_problem()
    if problem is not None:
        raise OutputError(f"--display: {problem}")
