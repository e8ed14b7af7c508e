"""The dashboard in headless Chromium, against the API on a loopback socket.

The API's log is `api_world` (two validators, ten judged tasks, a disagreeing decision) plus
task 12, whose sampler's directory bucket holds a real first frame, original clip and miner
videos: the API must serve them itself (a browser loads no `file://` URL), with HTTP ranges,
and only the objects the task's events name.

Needs Debian's `chromium` (`apt-get install -y chromium`, done by `.ci/run`); without it these
tests fail rather than skip. Screenshots go to the test's tmp dir (printed) and, when
LEOMA_SCREENSHOT_DIR is set, are copied there.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
import uvicorn

from leoma.api.app import create_app
from leoma.api.feed import Feeder
from leoma.log.consensus import DEFAULT
from leoma.devnet.clips import render_source
from leoma.api.pages import epoch_status
from leoma.log.events import (
    AnchorCommitted,
    EpochHeld,
    EpochScored,
    GateMeasurements,
    JudgeFailed,
    MinerResponded,
    TaskOpened,
    VerdictRecorded,
    WeightEntry,
    seal,
)
from leoma.mirror.seedformat import first_frame_key, generated_video_key, original_clip_key
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.video import first_frame_png, png_to_array
from tests.browser import Browser, chromium_path
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, moto_endpoint, s3_bucket  # noqa: F401
from tests.test_api import INTERVAL, World, api_world, service_for
from leoma.api.pages import agreement_strip

TASK = 12


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


@dataclass
class Served:
    world: World
    url: str
    sampler: str
    bucket: Path
    videos: dict[str, bytes]


def _append(world: World, origin: str, body: object, *, key: str, block: int) -> None:
    head = world.log.head(origin)
    world.log.import_events([seal(origin=origin, origin_seq=head.origin_seq + 1, key=key, block=block,
                                  body=body, prev=head.hash, at=1_799_999_000)])  # type: ignore[arg-type]


def media_world(tmp_path: Path) -> tuple[World, str, Path, dict[str, bytes]]:
    """api_world plus task 12 with real media in its sampler's directory bucket."""

    world = api_world(tmp_path)
    sampler = world.validators[TASK % 2]
    m1, m2, m3 = world.miners
    bucket = tmp_path / "buckets" / "sampler"
    clip = render_source(7, shots=(("right", 2.0),), width=320, height=192, fps=8, speed=3).video
    faithful = render_source(8, shots=(("right", 2.0),), width=320, height=192, fps=8, speed=3).video
    static = render_source(9, shots=(("left", 2.0),), width=320, height=192, fps=8, speed=1).video
    videos = {m1: faithful, m2: static}
    files = {first_frame_key(TASK): first_frame_png(clip), original_clip_key(TASK): clip,
             generated_video_key(TASK, m1): faithful, generated_video_key(TASK, m2): static,
             # on disk, but named by no event of the task: must never be served
             f"{TASK}/generated_videos/{m3}.mp4": static, f"{TASK}/notes.txt": b"private",
             f"{TASK}/metadata.json": b"{}"}
    for key, data in files.items():
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_bytes(data)
    (tmp_path / "outside.txt").write_bytes(b"outside the bucket")
    block = TASK * INTERVAL + 1
    _append(world, sampler, TaskOpened(task_id=TASK, interval=INTERVAL, sampler=sampler, block_hash="0x" + "cd" * 32,
                                       source_key="devnet/clip-0.mp4", clip_start_ms=0, clip_ms=2000,
                                       prompt="a textured plane sliding right", prompt_model="gemini",
                                       prompt_version="describe/v1", miners=(m1, m2, m3)),
            key=f"task/{TASK}", block=block)
    for m in (m1, m2):
        gates = GateMeasurements(decoded=True, codec="h264", frames=16, first_frame_psnr_cdb=3150,
                                 motion_c=420, max_cut_milli=12) if m == m1 else None
        _append(world, sampler, MinerResponded(task_id=TASK, miner=m, status="accepted", latency_ms=1500,
                                               object_key=generated_video_key(TASK, m), width=320, height=192,
                                               frames=16, gates=gates), key=f"response/{TASK}/{m}", block=block + 1)
    _append(world, sampler, MinerResponded(task_id=TASK, miner=m3, status="failed", failure_class="miner",
                                           detail="chute returned 500"), key=f"response/{TASK}/{m3}", block=block + 1)
    aspects = {"motion": 88, "visual_quality": 81, "prompt_adherence": 90}
    _append(world, sampler, VerdictRecorded(task_id=TASK, miner=m1, passed=True, overall=86, confidence=90,
                                            aspects=aspects, judge_model="gemini", prompt_version="evaluate/v1",
                                            reasoning="Follows the clip's motion closely.",
                                            major_issues=()), key=f"verdict/{TASK}/{m1}", block=block + 3)
    _append(world, sampler, VerdictRecorded(task_id=TASK, miner=m2, passed=False, overall=22, confidence=85,
                                            aspects={"motion": 5, "visual_quality": 60, "prompt_adherence": 30},
                                            judge_model="gemini", prompt_version="evaluate/v1",
                                            reasoning="Nothing moves.", major_issues=("static video",)),
            key=f"verdict/{TASK}/{m2}", block=block + 3)
    _append(world, sampler, JudgeFailed(task_id=TASK, miner=m2, judge_model="gemini", prompt_version="evaluate/v2",
                                        attempts=2, reason="quota exceeded"), key=f"judge/{TASK}/{m2}", block=block + 2)
    # A kind this API version does not know (the video gates' events grow): shown generically.
    gated = {"kind": "video_gated", "task_id": TASK, "miner": m1, "passed": True,
             "gates": {"decoded": True, "first_frame_psnr_cdb": 2712, "motion_c": 345, "max_cut_milli": 40,
                       "duration_ms": 2000, "hashes": ["ab" * 32] * 5, "source_distance": -1}}
    _append(world, sampler, msgspec.json.encode(gated), key=f"gate/{TASK}/{m1}", block=block + 2)
    return world, sampler, bucket, videos


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    world, sampler, bucket, videos = media_world(tmp_path)
    service = service_for(world)
    service.feeder = Feeder(world.log, [], DEFAULT, stores={sampler: DirectoryStore(bucket)})
    with ServerThread(create_app(service)) as server:
        yield Served(world, server.url, sampler, bucket, videos)


def keep(path: Path) -> Path:
    """Print where a screenshot is; copy it to LEOMA_SCREENSHOT_DIR too when set."""
    print(f"screenshot: {path}")
    target = os.environ.get("LEOMA_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def assert_picture(path: Path, width: int = 1280) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = png_to_array(data)
    assert pixels.shape[1] == width
    assert float(pixels.std()) > 5.0, "the screenshot is a single flat colour"


# -- the API's side: URLs, ranges, refusals -------------------------------------------------


def test_dashboard_served(served: Served) -> None:
    r = httpx.get(served.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="leaderboard"' in r.text
    for path in ("/static/dashboard.html", "/static/common.js", "/static/style.css", f"/task/{TASK}",
                 f"/miner/{served.world.miners[0]}"):
        assert httpx.get(served.url + path).status_code == 200, path


def test_task_media_urls_are_the_apis_own_not_file_urls(served: Served) -> None:
    view = httpx.get(f"{served.url}/tasks/{TASK}/view").json()
    m1, m2, m3 = served.world.miners
    base = f"{served.url}/media/{served.sampler}/"
    assert view["first_frame_url"] == base + first_frame_key(TASK)
    assert view["original_clip_url"] == base + original_clip_key(TASK)
    by_miner = {m["miner_hotkey"]: m for m in view["miners"]}
    assert by_miner[m1]["video_url"] == base + generated_video_key(TASK, m1)
    assert by_miner[m3]["video_url"] is None and by_miner[m3]["detail"] == "chute returned 500"
    assert by_miner[m1]["verdicts"][0]["aspect_scores"]["motion"] == 88
    assert by_miner[m1]["measurements"] == {"frames": 16, "height": 192, "width": 320, "gates.codec": "h264",
                                            "gates.decoded": True, "gates.first_frame_psnr_cdb": 3150,
                                            "gates.frames": 16, "gates.max_cut_milli": 12, "gates.motion_c": 420}
    assert by_miner[m2]["measurements"] == {"frames": 16, "height": 192, "width": 320}
    assert [c["kind"] for c in by_miner[m2]["checks"]] == ["judge_failed"]
    gate = by_miner[m1]["checks"][0]
    assert gate["kind"] == "video_gated" and gate["fields"]["gates.first_frame_psnr_cdb"] == 2712
    assert gate["fields"]["gates.source_distance"] == -1 and "gates.hashes" in gate["fields"]
    assert by_miner[m2]["checks"][0]["fields"]["reason"] == "quota exceeded"
    detail = httpx.get(f"{served.url}/tasks/{TASK}").json()
    assert detail["first_frame_url"] == view["first_frame_url"]  # the seed's route too
    # A task whose sampler's bucket the API does not know has no URL, never a dead one.
    assert httpx.get(f"{served.url}/tasks/11/view").json()["first_frame_url"] is None


def test_range_request_returns_206_with_the_right_bytes(served: Served) -> None:
    m1 = served.world.miners[0]
    url = f"{served.url}/media/{served.sampler}/{generated_video_key(TASK, m1)}"
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == served.videos[m1]
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    size = len(served.videos[m1])
    part = httpx.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == served.videos[m1][100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    tail = httpx.get(url, headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == served.videos[m1][-64:]
    assert httpx.get(url, headers={"Range": f"bytes={size + 10}-"}).status_code == 416


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` byte for byte (httpx would normalise `..` away before the API saw it)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("key", [
    f"{TASK}/notes.txt",                       # in the bucket, named by no event
    f"{TASK}/metadata.json",
    "{m3}",                                    # a miner whose response failed: its file is not the task's
    f"{TASK}/generated_videos/../first_frame.png",
    f"{TASK}/../../outside.txt",
    f"{TASK}/../../../outside.txt",
    "11/first_frame.png",                      # a task this validator did not open
    f"{TASK}/first_frame.png/",
    ".leoma-store/meta/x.json",
])
def test_keys_not_named_by_the_task_are_refused(served: Served, key: str) -> None:
    key = key.replace("{m3}", f"{TASK}/generated_videos/{served.world.miners[2]}.mp4")
    status, body = raw_get(served.url, f"/media/{served.sampler}/{key}")
    assert status == 404, (key, status, body[:80])
    assert b"private" not in body and b"outside" not in body


def test_media_of_another_validator_is_refused(served: Served) -> None:
    other = served.world.validators[(TASK + 1) % 2]
    assert httpx.get(f"{served.url}/media/{other}/{first_frame_key(TASK)}").status_code == 404


def test_agreement_strip_and_miner_history(served: Served) -> None:
    strip = httpx.get(f"{served.url}/epochs/agreement").json()
    assert [e["status"] for e in strip["epochs"]] == ["differed"] and strip["differed"] == 1
    m1 = served.world.miners[0]
    history = httpx.get(f"{served.url}/miners/{m1}/history").json()
    assert {s["validator_hotkey"] for s in history["validators"]} == set(served.world.validators)
    points = [p["task_id"] for s in history["validators"] for p in s["points"]]
    assert sorted(points) == list(range(2, TASK + 1))


def test_agreement_strip_shows_anchors_and_anchored_holds(tmp_path: Path) -> None:
    # Under the anchored rule a validator that cannot read what the anchors cover records
    # `epoch_held` (no decision): the strip shows it held, with the peer and the reason, and
    # every validator's committed anchor for the epoch.
    world = api_world(tmp_path, disagree=False)
    a, b = world.validators
    nxt = world.epoch + 1
    block = nxt * DEFAULT.epoch.length
    _append(world, a, AnchorCommitted(epoch=world.epoch, size=40, head="ab" * 32, commit_block=block - 30,
                                      payload="leoma:anchor:v1:40:" + "ab" * 32),
            key=f"anchor/{world.epoch}", block=block - 30)
    _append(world, b, EpochHeld(epoch=nxt, peer=a, reason="behind", anchored_size=50, local_size=44),
            key=f"epoch/{nxt}/held/{a}", block=block)
    _append(world, a, AnchorCommitted(epoch=nxt, size=50, head="cd" * 32, commit_block=block - 5,
                                      payload="leoma:anchor:v1:50:" + "cd" * 32), key=f"anchor/{nxt}", block=block - 5)
    state = service_for(world).refresh()
    strip = agreement_strip(state)
    by_epoch = {e["epoch"]: e for e in strip["epochs"]}
    assert [e["status"] for e in strip["epochs"]] == ["agreed", "held"]
    first = {v["validator_hotkey"]: v for v in by_epoch[world.epoch]["validators"]}
    assert first[a]["anchor"] == {"size": 40, "head": "ab" * 32, "block": block - 30} and first[b]["anchor"] is None
    held = by_epoch[nxt]
    assert held["decided"] == 0 and held["expected"] == 2
    (row,) = held["validators"]
    assert (row["validator_hotkey"], row["held"], row["held_reason"], row["held_peer"]) == (b, True, "behind", a)
    assert row["anchor"] is None


# -- the browser's side ---------------------------------------------------------------------


def test_dashboard_renders_leaderboard(served: Served, tmp_path: Path) -> None:
    with Browser(tmp_path) as b:
        b.goto(served.url + "/")
        b.wait_for("document.querySelectorAll('.lb-row').length > 0")
        b.wait_for("document.querySelector('#agreement-strip') !== null")
        assert served.world.winner in b.eval("document.getElementById('winner').textContent")
        assert b.eval("document.querySelectorAll('.lb-row').length") == 3
        assert b.eval("document.querySelector('#lead-chart') !== null")
        assert "Validators disagree" in b.eval("document.getElementById('agreement').textContent")
        assert b.eval("document.querySelectorAll('.val-row').length") == 2
        text = b.eval("document.getElementById('tasks').textContent")
        assert "task 11" in text and "a prompt" in text
        assert b.eval("[...document.querySelectorAll('#agreement-strip rect.cell')].map(r => r.dataset.status)") \
            == ["differed"]
        # the recent task with media shows its frame, loaded from the API
        b.wait_for(f"document.querySelector('img[alt=\"first frame of task {TASK}\"]')?.naturalWidth > 0")
        assert_picture(keep(b.screenshot(tmp_path / "dashboard.png")))


def test_task_page_plays_every_video_beside_the_original(served: Served, tmp_path: Path) -> None:
    m1, m2, _ = served.world.miners
    with Browser(tmp_path) as b:
        b.goto(f"{served.url}/task/{TASK}")
        assert b.wait_for("document.getElementById('first-frame')?.naturalWidth") == 320
        b.wait_for("document.getElementById('original-clip')?.readyState >= 1")
        for m in (m1, m2):
            sel = f"document.querySelector('video.miner-video[data-hotkey=\"{m}\"]')"
            b.wait_for(f"{sel}?.readyState >= 1 && {sel}.duration > 0")
        assert b.eval("document.querySelectorAll('video.miner-video').length") == 2
        tiles = b.eval("[...document.querySelectorAll('.miner-tile')].map(t => t.dataset.hotkey)")
        assert tiles[0] == m1 and len(tiles) == 3  # best verdict first; the failed miner is shown too
        text = b.eval("document.getElementById('stage').textContent")
        assert "Follows the clip's motion closely." in text and "PASSED · 86/100" in text
        assert "Nothing moves." in text and "static video" in text and "chute returned 500" in text
        assert "quota exceeded" in text and "judge failed" in text  # a check's measurements, shown generically
        assert "video gated" in text and "gates first frame psnr" in text and "27.12 dB" in text
        assert "gates motion" in text and "3.45" in text and "5 items" in text
        assert "31.50 dB" in text and "h264" in text  # the response's own gate measurements
        points = b.eval("[...document.querySelectorAll('#aspect-chart circle.pt')].length")
        assert points == 2 * 4  # two judged miners x (three aspects + overall)
        # playing in sync: the followers stay within a fraction of a second of the original
        b.eval("document.getElementById('play').click()")
        b.wait_for("document.getElementById('original-clip').currentTime > 0.3")
        drift = b.eval("Math.max(...[...document.querySelectorAll('video.miner-video')].map("
                       "v => Math.abs(v.currentTime - Math.min(document.getElementById('original-clip').currentTime,"
                       " v.duration))))")
        assert drift < 0.5
        b.eval("document.getElementById('pause').click()")
        # seeking the original moves every miner's video to the same moment
        b.eval("document.getElementById('original-clip').currentTime = 1.25")
        b.wait_for("[...document.querySelectorAll('video.miner-video')].every("
                   "v => v.paused && Math.abs(v.currentTime - 1.25) < 0.2)", timeout=20)
        assert_picture(keep(b.screenshot(tmp_path / "task.png")))


def test_miner_page_charts_verdicts_per_validator(served: Served, tmp_path: Path) -> None:
    m2 = served.world.miners[1]
    with Browser(tmp_path) as b:
        b.goto(f"{served.url}/miner/{m2}")
        b.wait_for("document.querySelectorAll('#history-chart circle.pt').length > 0")
        by_validator = b.eval("(() => { const out = {}; for (const c of document.querySelectorAll('#history-chart circle.pt'))"
                              " out[c.dataset.validator] = (out[c.dataset.validator] || 0) + 1; return out; })()")
        # tasks 2..11 alternate samplers; task 12 was sampled by validators[0]
        assert by_validator == {served.world.validators[0]: 6, served.world.validators[1]: 5}
        hollow = b.eval("[...document.querySelectorAll('#history-chart circle.pt')].filter("
                        "c => c.getAttribute('fill') === '#0f1419').length")
        assert hollow == 6  # m2 failed the odd tasks 3, 5, 7, 9, 11 and task 12
        assert b.eval("document.querySelectorAll('#tasks .task-row').length") == 11
        assert_picture(keep(b.screenshot(tmp_path / "miner.png")))


def test_a_missing_browser_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tests.browser as browser

    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium_path()


# -- the agreement strip's rule ----------------------------------------------------------------


def _decision(winner: str, weights: tuple[tuple[int, int], ...], burn: str = "", keeps: int = -1) -> EpochScored:
    return EpochScored(epoch=5, netuid=1, consensus_digest="d", frontier=(), winner=winner, winner_uid=weights[0][0],
                       weights=tuple(WeightEntry(uid=u, weight=w) for u, w in weights), burn_reason=burn,
                       keeps_epoch=keeps)


@pytest.mark.parametrize("decisions,status", [
    ({"a": ("m1", ((1, 65535),)), "b": ("m1", ((1, 65535),))}, "agreed"),
    ({"a": ("m1", ((1, 65535),))}, "agreed"),
    ({"a": ("m1", ((1, 65535),)), "b": ("m2", ((2, 65535),))}, "differed"),
    ({"a": ("m1", ((1, 65535),)), "b": ("m1", ((1, 65000), (2, 535)))}, "differed"),  # same winner, other weights
    ({"a": ("m1", ((1, 65535),)), "b": ("", ((0, 65535),), "held: anchors do not cover the window")}, "held"),
    ({"a": ("m1", ((1, 65535),)), "b": ("", ((0, 65535),), "hold"), "c": ("m2", ((2, 65535),))}, "differed"),
    ({"a": ("", ((0, 65535),), "no metagraph"), "b": ("m1", ((1, 65535),))}, "differed"),  # a burn is a decision
    # the fail-closed rule: no data, the weights of epoch 4 stay on chain
    ({"a": ("m1", ((1, 65535),)), "b": ("", ((0, 65535),), "no verdicts", 4)}, "held"),
    ({"a": ("", ((0, 65535),), "no verdicts", 4), "b": ("", ((0, 65535),), "no verdicts", 3)}, "held"),
])
def test_epoch_status(decisions: dict[str, tuple], status: str) -> None:
    assert epoch_status({k: _decision(*v) for k, v in decisions.items()}) == status


# -- S3/R2 buckets keep their presigned URLs ---------------------------------------------------


async def test_s3_buckets_are_presigned_not_served(tmp_path: Path, moto_endpoint: str, s3_bucket: str) -> None:
    from leoma.adapters.s3 import S3Store

    world, sampler, bucket, videos = media_world(tmp_path)
    store = S3Store(s3_bucket, access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_url=moto_endpoint,
                    region=REGION)
    await store.ensure_bucket()
    m1 = world.miners[0]
    await store.put(generated_video_key(TASK, m1), videos[m1], content_type="video/mp4")
    service = service_for(world)
    service.feeder = Feeder(world.log, [], DEFAULT, stores={sampler: store})
    app = create_app(service)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            view = (await client.get(f"/tasks/{TASK}/view")).json()
            url = next(m["video_url"] for m in view["miners"] if m["miner_hotkey"] == m1)
            assert url.startswith(moto_endpoint) and "Signature" in url
            # the API streams nothing from an S3 bucket itself
            assert (await client.get(f"/media/{sampler}/{generated_video_key(TASK, m1)}")).status_code == 404
        async with httpx.AsyncClient() as direct:
            part = await direct.get(url, headers={"Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == videos[m1][10:100]
    finally:
        await store.close()


def test_task_page_fills_in_verdicts_as_they_arrive(served: Served, tmp_path: Path) -> None:
    m1 = served.world.miners[0]
    task, sampler = TASK + 2, served.sampler  # the same sampler's turn again
    for name in ("first_frame.png", "original_clip.mp4", f"generated_videos/{m1}.mp4"):
        (served.bucket / str(task) / name).parent.mkdir(parents=True, exist_ok=True)
        (served.bucket / str(task) / name).write_bytes((served.bucket / str(TASK) / name).read_bytes())
    block = task * INTERVAL + 1
    _append(served.world, sampler, TaskOpened(task_id=task, interval=INTERVAL, sampler=sampler,
                                              block_hash="0x" + "ef" * 32, source_key="devnet/clip-1.mp4",
                                              clip_start_ms=0, clip_ms=2000, prompt="later", prompt_model="gemini",
                                              prompt_version="describe/v1", miners=(m1,)), key=f"task/{task}", block=block)
    _append(served.world, sampler, MinerResponded(task_id=task, miner=m1, status="accepted", latency_ms=900,
                                                  object_key=generated_video_key(task, m1)),
            key=f"response/{task}/{m1}", block=block + 1)
    with Browser(tmp_path) as b:
        b.goto(f"{served.url}/task/{task}")
        b.wait_for("document.querySelector('.miner-tile .pending') !== null")
        b.wait_for("document.querySelector('video.miner-video').readyState >= 1")
        b.eval("window.playing = document.querySelector('video.miner-video')")
        _append(served.world, sampler, VerdictRecorded(task_id=task, miner=m1, passed=True, overall=77,
                                                       judge_model="gemini", prompt_version="evaluate/v1",
                                                       reasoning="Arrived later."),
                key=f"verdict/{task}/{m1}", block=block + 3)
        b.wait_for("document.getElementById('stage').textContent.includes('Arrived later.')", timeout=30)
        assert b.eval("document.querySelector('.miner-tile .pending') === null")
        assert b.eval("window.playing === document.querySelector('video.miner-video')")  # not reloaded
