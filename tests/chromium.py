"""The real headless Chromium the browser tests drive (Debian chromium + chromium-driver)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "Debian chromium + chromium-driver missing (apt-get install chromium chromium-driver)"
needs_chromium = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=MISSING)


def start_chromium(profile: Path, *flags: str, window: str = "1280,720"):
    """A headless Chromium under selenium with its own profile folder; skips the test when the
    browser, its driver or selenium is missing. `flags` add to the common ones."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (dev)")
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(MISSING)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
        *flags,
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    return drv
