"""Render a page in a real headless browser (Chromium) and save a screenshot: the check that the leaderboard's
self-contained HTML displays.

The browser is found as ``$CHROMIUM`` or the first of ``chromium-headless-shell``, ``chromium``,
``chromium-browser``, ``google-chrome`` on ``PATH`` (Debian: ``apt-get install chromium-headless-shell``, which
``.ci/setup`` installs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from envs.errors import DreamshiftError

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """Path of a headless-capable Chromium, or ``None``."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)


def screenshot(page: Path | str, png: Path | str, width: int = 1400, height: int = 1800, timeout: float = 120.0,
               ) -> Path:
    """Open ``page`` (a local HTML file) in headless Chromium and write a ``width`` × ``height`` PNG to ``png``
    (atomically: the browser writes a temp file that is renamed).

    Raises:
        DreamshiftError: no browser found, the page is missing, or the browser fails / writes no image.
    """
    browser = find_browser()
    if browser is None:
        raise DreamshiftError(f"no headless Chromium found (tried $CHROMIUM, {', '.join(BROWSERS)}); install one, "
                              f"e.g. `apt-get install chromium-headless-shell`")
    page, png = Path(page).resolve(), Path(png)
    if not page.is_file():
        raise DreamshiftError(f"{page}: no such page")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        tmp = png.with_name(f".{png.name}.tmp.png")
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={tmp.resolve()}",
               page.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DreamshiftError(f"{browser} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            raise DreamshiftError(f"{browser} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        os.replace(tmp, png)
    return png
