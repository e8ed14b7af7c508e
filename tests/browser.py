"""Headless Chromium driven over the DevTools protocol, for the dashboard tests.

    with Browser(tmp_path) as b:
        b.goto(url)
        b.wait_for("document.querySelector('#first-frame')?.naturalWidth > 0")
        b.screenshot(tmp_path / "task.png")

Debian's `chromium` package; a missing browser is a failure, not a skip (CI installs it, and a
dashboard nobody could look at is what these tests exist to catch).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    """The Chromium binary, or a test failure that says how to install it."""
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        pytest.fail("headless Chromium is not installed (/usr/bin/chromium): apt-get install -y chromium "
                    "(.ci/run installs it); the dashboard cannot be checked without a browser")
    return found


class BrowserError(AssertionError):
    """The page did not reach the expected state, or the protocol said no."""


class Browser:
    """One headless Chromium with one page, on an ephemeral DevTools port."""

    def __init__(self, tmp_path: Path, *, width: int = 1280, height: int = 1600) -> None:
        self.profile = tmp_path / "chromium-profile"
        self.width, self.height = width, height
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self.console: list[str] = []

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        args = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                self.__exit__()
                raise BrowserError(f"chromium did not open its DevTools port: {err}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not targets:
            targets = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                       if t.get("type") == "page"]
            if not targets:
                time.sleep(0.05)
        if not targets:
            raise BrowserError("chromium opened no page")
        self.ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    # -- the protocol ---------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> dict[str, Any]:
        """One command; events that arrive meanwhile are kept only for the console log."""
        assert self.ws is not None
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {timeout:.0f} s")
            message = json.loads(self.ws.recv(timeout=left))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == "Runtime.consoleAPICalled":
            args = message["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            self.console.append("exception: " + json.dumps(message["params"].get("exceptionDetails", {}))[:500])

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def goto(self, url: str, *, timeout: float = 60) -> None:
        """Open `url` and wait until its document has loaded."""
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout=timeout)

    def wait_for(self, expression: str, *, timeout: float = 60, poll: float = 0.2) -> Any:
        """Poll `expression` until it is truthy; its value. BrowserError (with the console) otherwise."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(poll)
        raise BrowserError(f"{expression!r} stayed {value!r} for {timeout:.0f} s; console: {self.console[-10:]}")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window) at `path`."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": min(int(size["height"]) + 1, 8000), "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
