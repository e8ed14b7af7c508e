"""The dashboard page, rendered by headless Chromium against the API on a loopback socket.

Needs Debian's `chromium` (`apt-get install -y chromium`); skipped with a reason when absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from leoma.api.app import create_app
from leoma.video import png_to_array
from tests.test_api import World, api_world, service_for

CHROMIUM = "/usr/bin/chromium"


class ServerThread:
    """uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: object) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = api_world(tmp_path)
    with ServerThread(create_app(service_for(world))) as server:
        yield world, server.url


def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium): apt-get install -y chromium")
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", "--virtual-time-budget=5000",
            *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


def test_dashboard_served(served: tuple[World, str]) -> None:
    _, url = served
    r = httpx.get(url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="leaderboard"' in r.text
    assert httpx.get(url + "/static/dashboard.html").status_code == 200


def test_dashboard_renders_leaderboard(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    done = chromium(tmp_path, url + "/", "--dump-dom")
    dom = done.stdout
    assert 'id="winner"' in dom, done.stderr[-2000:]
    winner_span = dom.split('id="winner"', 1)[1].split("</span>", 1)[0]
    assert world.winner in winner_span
    assert dom.count('class="lb-row"') == 3
    assert 'id="lead-chart"' in dom
    assert "Validators disagree" in dom
    assert dom.count('class="val-row"') == 2
    assert "task 11" in dom and "a prompt" in dom


def test_dashboard_screenshot_is_not_blank(served: tuple[World, str], tmp_path: Path) -> None:
    _, url = served
    png = tmp_path / "dashboard.png"
    done = chromium(tmp_path, url + "/", f"--screenshot={png}")
    assert png.exists(), done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = png_to_array(data)
    assert pixels.shape[1] == 1280
    assert float(pixels.std()) > 5.0, "the screenshot is a single flat colour"
    keep = os.environ.get("LEOMA_SCREENSHOT_DIR")  # CI may keep the picture as an artifact
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / "dashboard.png")
