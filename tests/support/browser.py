"""A real browser for the dashboard's tests: Debian's chromium (headless) driven by Selenium through Debian's
chromium-driver (scripts/setup installs them; Selenium Manager downloads nothing), and axe-core's own
axe.min.js (fetched by scripts/setup into .venv/share/axe-core).

- ``needs_browser``: a skip mark naming what is missing (chromium, chromedriver, selenium).
- ``Browser(profile, base, shots)``: one headless chromium with a fresh profile, its viewport set like a real
  screen's (``size``), ``open``/``at``/``until``/``text``/``click``/``js``, ``tile(mac)`` (a tile as the rack
  shows it), ``shot(name)`` (a PNG under ``shots``), ``axe(name)`` (violations by impact, the whole result
  kept as ``axe-NAME.json``). ``quit()`` when done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
AXE = Path(os.environ.get("PROVISION_AXE_CORE", REPO / ".venv" / "share" / "axe-core" / "axe.min.js"))
WALL = (1920, 1080)  # the workshop's wall screen
PHONE = (390, 844)  # a phone held upright, CSS pixels
WAIT = 10.0

try:
    import selenium  # noqa: F401
except ImportError:  # scripts/setup installs it (pyproject.toml, test extras)
    HAVE_SELENIUM = False
else:
    HAVE_SELENIUM = True


def browser_missing() -> str | None:
    """Why no browser can run here (None: it can)."""
    if not Path(CHROMIUM).exists():
        return "chromium missing (Debian package chromium)"
    if not Path(CHROMEDRIVER).exists():
        return "chromedriver missing (Debian package chromium-driver)"
    if not HAVE_SELENIUM:
        return "selenium missing (pip install -e '.[test]')"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


class Browser:
    """One headless chromium, its viewport set like a real screen's (not the window's outer size)."""

    def __init__(self, tmp: Path, base: str, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM  # Debian's: Selenium Manager downloads nothing
        for arg in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu", f"--user-data-dir={tmp}",
                    "--accept-lang=de-DE,de", "--hide-scrollbars", "--no-first-run"):  # fmt: skip
            options.add_argument(arg)
        if os.geteuid() == 0:
            options.add_argument("--no-sandbox")  # chromium's sandbox refuses to run as root
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_script_timeout(30)
        self.base = base
        self.shots = shots
        self.size(*WALL)

    def size(self, width: int, height: int, mobile: bool = False) -> None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base}{path}")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while not (value := condition()):
            assert time.monotonic() < deadline, f"{what}: not within {WAIT} s"
            time.sleep(0.05)
        return value

    def at(self, path: str, what: str) -> None:
        """Wait until the page at ``path`` (and maybe a query) is loaded: after a click, not before."""
        script = "return document.readyState === 'complete' && location.pathname === arguments[0]"
        self.until(lambda: self.js(script, path), what)

    def text(self, css: str) -> str:
        """The text of ``css``'s first element, read in one call (a page being replaced has no stale element)."""
        return str(self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css))

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def tile(self, mac: str) -> dict[str, Any] | None:
        """The tile of ``mac`` as the page shows it now (no-break spaces as spaces), or None."""
        found: dict[str, Any] | None = self.js(
            """const tile = document.getElementById(arguments[0]);
            if (!tile) return null;
            const bar = tile.querySelector('progress');
            const text = tile.innerText.replace(/[\u00a0\u202f]/g, ' ');  // French spacing: plain spaces
            return {stage: tile.dataset.stage, number: Number(tile.dataset.number), text: text,
                    percent: bar ? Number(bar.value) : null};""",
            "tile-" + mac.replace(":", "-"),
        )
        return found

    def shot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / name
        assert self.driver.save_screenshot(str(path)), path
        return path

    def axe(self, name: str) -> dict[str, list[str]]:
        """axe-core's violations on the page shown, by impact ({impact: [rule: nodes]}); the whole result
        goes to the artifacts as axe-NAME.json."""
        if not AXE.exists():
            pytest.skip(f"axe-core missing: {AXE} (scripts/setup fetches it)")
        self.js(AXE.read_text())
        result = self.driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ['violations', 'incomplete']})
                .then(done, (e) => done({error: String(e)}));"""
        )
        assert "error" not in result, result
        self.shots.mkdir(parents=True, exist_ok=True)
        kept = {key: result[key] for key in ("testEngine", "url", "violations", "incomplete")}
        kept["passes"] = sorted(rule["id"] for rule in result["passes"])
        (self.shots / f"axe-{name}.json").write_text(json.dumps(kept, indent=1))
        by_impact: dict[str, list[str]] = {}
        for violation in result["violations"]:
            targets = [" ".join(node["target"]) for node in violation["nodes"]][:5]
            by_impact.setdefault(violation["impact"], []).append(f"{violation['id']}: {targets}")
        for unsure in result["incomplete"]:  # what axe could not decide (a person looks): kept apart
            by_impact.setdefault("incomplete", []).append(f"{unsure['id']}: {len(unsure['nodes'])} nodes")
        return by_impact

    def quit(self) -> None:
        self.driver.quit()
