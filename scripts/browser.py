"""Make sure the dashboard's browser tests have a browser: Debian's chromium and chromedriver.

    python3 scripts/browser.py

``make test`` runs it first.  Nothing to do when both are installed.  Otherwise, as root
with apt-get (a CI machine), it installs ``chromium`` and ``chromium-driver`` from Debian's
archive (about 80 MB; no browser download from anywhere else works here).  Where it cannot,
it says so and exits 0: ``tests/test_web_browser.py`` then skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = ("chromium", "chromium-driver")


def installed() -> bool:
    return bool(shutil.which("chromium") or shutil.which("chromium-browser")) and bool(
        shutil.which("chromedriver")
    )


def main() -> int:
    if installed():
        return 0
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(
            "[browser] chromium or chromedriver is missing and this is not root with apt-get: the "
            f"browser tests skip (apt-get install -y {' '.join(PACKAGES)} runs them).",
            file=sys.stderr,
        )
        return 0
    print(
        f"[browser] apt-get install -y {' '.join(PACKAGES)} (for the dashboard's browser tests)",
        file=sys.stderr,
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(install, **quiet)  # type: ignore[call-overload]
    if result.returncode != 0:  # an archive index never fetched, or a stale one
        subprocess.run(["apt-get", "update", "-q"], **quiet)  # type: ignore[call-overload]
        result = subprocess.run(install, **quiet)  # type: ignore[call-overload]
    if result.returncode != 0 or not installed():
        print(
            f"[browser] could not install {' '.join(PACKAGES)}; the browser tests skip:\n"
            f"{result.stderr[-1000:]}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
