"""Debian's headless Chromium, driven through Debian's chromedriver (Selenium), for the
dashboard's tests, its benchmark and docs/dashboard.png.

Chromium here needs a fresh profile and its background services off, or it stalls trying
to reach the network; `scripts/browser` installs it (as root with apt) when it is missing.

    python -m bench.browser screenshot URL FILE [--ready JS --then CMD] [--when JS]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
#: The size of the window the page is drawn in (and of its screenshots).
WINDOW = (1400, 1000)


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed; the message says how to get them."""


def missing() -> str:
    """What is missing to drive the browser, or '' when everything is there."""
    lacking = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        lacking.append("the selenium package (the dev extra: make setup)")
    if not lacking:
        return ""
    return (
        f"{', '.join(lacking)} missing: the dashboard's browser test needs Debian's chromium "
        "and chromium-driver. As root, 'scripts/browser' installs them (make test runs it); "
        "otherwise: sudo apt-get install -y chromium chromium-driver"
    )


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[Any]:
    """A headless Chromium (a Selenium WebDriver) with a profile of its own, closed after."""
    why = missing()
    if why:
        raise BrowserMissing(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    # The driver named explicitly: Selenium would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll check() (a DOM query, say) until it returns something truthy, or fail saying what."""
    end = time.monotonic() + timeout
    pause = 0.02
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(pause)
        pause = min(0.25, pause * 1.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def screenshot(
    url: str, out: Path, when: str = "true", timeout: float = 120.0, ready: str = "", then: str = ""
) -> None:
    """Open url; once the JS expression `ready` holds, run the shell command `then`; once
    `when` holds, save a PNG of the page (and wait for `then` to finish)."""
    with chromium() as driver:
        driver.get(url)
        started = None
        if ready:
            wait_until(
                f"the page to satisfy {ready}",
                lambda: driver.execute_script(f"return {ready}"),
                timeout,
            )
        if then:
            started = subprocess.Popen(then, shell=True)
        try:
            wait_until(
                f"the page to satisfy {when}",
                lambda: driver.execute_script(f"return {when}"),
                timeout,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            if started is not None and started.wait(timeout) != 0:
                raise AssertionError(f"'{then}' exited with {started.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    shot = sub.add_parser("screenshot", help="save a PNG of a page once a condition holds")
    shot.add_argument("url")
    shot.add_argument("out", type=Path)
    shot.add_argument("--when", default="true", help="a JS expression to wait for")
    shot.add_argument("--timeout", type=float, default=120.0)
    shot.add_argument("--ready", default="", help="a JS expression to wait for before --then")
    shot.add_argument("--then", default="", help="a shell command to run once --ready holds")
    args = parser.parse_args(argv)
    try:
        screenshot(args.url, args.out, args.when, args.timeout, args.ready, args.then)
    except (BrowserMissing, AssertionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"browser: saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
