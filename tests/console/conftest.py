"""Headless Chromium for the console's browser tests (Debian's `chromium`, driven by Playwright).

Playwright never downloads a browser here: it launches /usr/bin/chromium. Where chromium or
Playwright is missing the browser tests skip with a message, unless DOORKEEPER_REQUIRE_BROWSER=1
(set by .ci/run), which turns the skip into a failure. Screenshots of each page go to
$DOORKEEPER_SCREENSHOTS, or to the test's tmp folder (never into the repository).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("DOORKEEPER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _need_browser(why: str) -> None:
    message = f"browser tests need {why}"
    if os.environ.get("DOORKEEPER_REQUIRE_BROWSER") == "1":
        pytest.fail(message + "; DOORKEEPER_REQUIRE_BROWSER=1 forbids skipping")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _need_browser(f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need_browser("Playwright for Python (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


class Shots:
    """Screenshots of the pages a test visits, and every console error or page error seen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.errors: list[str] = []
        self.allowed: list[str] = []  # substrings of errors a step expects (a refused page's 403)
        self.count = 0

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self._console(m.type, m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        return page

    def _console(self, kind: str, text: str) -> None:
        if kind == "error" and not any(a in text for a in self.allowed):
            self.errors.append(f"console.error: {text}")

    def take(self, page: Any, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request, tmp_path: Path) -> Iterator[Shots]:  # type: ignore[no-untyped-def]
    base = os.environ.get("DOORKEEPER_SCREENSHOTS")
    folder = Path(base) / request.node.name if base else tmp_path / "screenshots"
    s = Shots(folder)
    yield s
    assert not s.errors, f"errors in the page: {s.errors}"
