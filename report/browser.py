"""Headless Chromium (Debian package ``chromium``): the report's DOM as a browser builds it, and a PNG."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

WINDOW = (1400, 2000)
# No network, no first-run or sync machinery: the report is one local file.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserError(RuntimeError):
    """Chromium is missing or failed."""


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BrowserError(
            "chromium is not installed: `make system-deps` installs the Debian package `chromium`"
        )
    return found


def _run(page: Path, *args: str, window: tuple[int, int], timeout_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="edgeml-chromium-") as profile:
        done = subprocess.run(  # noqa: S603 - fixed flags, our own file
            [
                chromium_binary(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={window[0]},{window[1]}",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise BrowserError(f"chromium exited with {done.returncode}: {done.stderr[-1000:]}")
    return done.stdout


def dump_dom(page: Path, *, window: tuple[int, int] = WINDOW, timeout_s: float = 90.0) -> str:
    return _run(page, "--dump-dom", window=window, timeout_s=timeout_s)


def screenshot(page: Path, png: Path, *, window: tuple[int, int] = WINDOW, timeout_s: float = 90.0) -> Path:
    _run(page, f"--screenshot={png.resolve()}", window=window, timeout_s=timeout_s)
    if not png.is_file():
        raise BrowserError(f"chromium wrote no screenshot at {png}")
    return png
