"""Done-when of the owner's dashboard on a devnet: it shows the winner the validators set on chain.

A small devnet (two validators, a faithful and a noisy miner) runs until both validators
decided an epoch with a winner and their weights landed on the simulated chain. Then headless
Chromium renders the devnet's dashboard, whose winner must be the hotkey the chain's weights
point at, and every read route of the seed answers 200 with the seed's fields, from the
events the API imported from the validators' directory buckets. A recent task's page shows its
first frame and plays the miners' videos, served by the API from those buckets with HTTP
ranges. Then the validators stop and the API imports all they published (one settled snapshot):
the miner page charts exactly the verdicts the API reports, and the read routes agree with each
other. Last, the dashboard outlives the devnet: kept up by `stop(keep_api=True)`, and served
again by `leoma dashboard --dir`. Screenshots are written to the tests' tmp dirs (the paths
are printed; `-s` shows them).
"""

from __future__ import annotations

import asyncio
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.storage import validate_key
from leoma.devnet.config import DevnetConfig
from leoma.devnet.network import Devnet
from leoma.errors import LogError
from leoma.log.eventlog import EventLog
from tests.browser import Browser
from tests.test_api import CARD, MINER, SAMPLE, fields
from tests.test_dashboard import assert_picture, keep, raw_get

pytestmark = pytest.mark.slow

CONFIG = DevnetConfig(validators=2, miners=("faithful", "noisy"))


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet.create(tmp_path_factory.mktemp("devnet-api") / "net", CONFIG)
    net.start()
    try:
        yield net
    finally:
        net.stop()


def chain_winner(net: Devnet) -> str | None:
    """The hotkey every allowlisted validator's weight row on chain points at (None until they all agree)."""
    from leoma.adapters.chain import Chain

    state = net.sim.state()

    async def rows() -> list[list[tuple[int, int]]]:
        async with Chain(f"sim:{net.chain_path}") as chain:
            return [await chain.weights(CONFIG.netuid, state.uid(n.hotkey)) for n in net.validators]

    tops = set()
    for row in asyncio.run(rows()):
        if not row:
            return None
        tops.add(max(row, key=lambda p: p[1])[0])
    if len(tops) != 1:
        return None
    uid = tops.pop()
    return state.hotkeys[uid] if uid != 0 else None  # uid 0 is the owner: a burn, not a winner


@pytest.fixture(scope="module")
def decided(devnet: Devnet) -> str:
    """The winner on chain, once the API has imported the same decision."""
    found: dict[str, str] = {}

    def ready() -> bool:
        if devnet.dead():
            pytest.fail(f"a validator exited: {devnet.dead()}")
        winner = chain_winner(devnet)
        if winner is None:
            return False
        found["winner"] = winner
        return httpx.get(devnet.api_url + "scores/rank", timeout=10).json().get("winner") == winner

    assert devnet.wait_for(ready, timeout=300, poll=1.0), devnet.progress()
    return found["winner"]


def test_devnet_prints_the_dashboard_url_in_its_summary(devnet: Devnet) -> None:
    assert devnet.api_url.startswith("http://127.0.0.1:") and devnet.api_url.endswith("/")
    assert devnet.summary()["api_url"] == devnet.api_url
    assert (devnet.api_dir / "api.db").is_file() and (devnet.api_dir / "api.log").is_file()


def test_dashboard_shows_the_winner_set_on_chain(devnet: Devnet, decided: str, tmp_path: Path) -> None:
    assert decided == devnet.state.miners["faithful"]  # the validators agreed on the right miner
    with Browser(tmp_path) as b:
        b.goto(devnet.api_url)
        b.wait_for("document.querySelectorAll('.lb-row').length > 0")
        assert decided in b.eval("document.getElementById('winner').textContent")
        assert b.eval("document.querySelector('.lb-row').dataset.hotkey") == decided  # it heads the leaderboard
        assert b.eval("document.querySelectorAll('.val-row').length") == len(devnet.validators)
        b.wait_for("document.querySelectorAll('#agreement-strip rect.cell').length > 0")
        statuses = b.eval("[...document.querySelectorAll('#agreement-strip rect.cell')].map(r => r.dataset.status)")
        assert "differed" not in statuses, statuses
        b.wait_for("[...document.querySelectorAll('#tasks img')].some(i => i.naturalWidth > 0)")
        assert_picture(keep(b.screenshot(tmp_path / "devnet-dashboard.png")))


def _task_with_videos(url: str) -> dict[str, Any]:
    for t in httpx.get(url + "tasks/recent?limit=20", timeout=30).json():
        view = httpx.get(url + f"tasks/{t['task_id']}/view", timeout=30).json()
        judged = [m for m in view["miners"] if m["video_url"] and m["verdicts"] and m["verdicts"][0]["reasoning"]]
        if view["first_frame_url"] and sum(1 for m in view["miners"] if m["video_url"]) >= 2 and judged:
            return view
    raise AssertionError("no recent task with a first frame, two miner videos and a verdict")


def test_task_page_shows_the_frame_and_plays_the_miners_videos(devnet: Devnet, decided: str, tmp_path: Path) -> None:
    view = _task_with_videos(devnet.api_url)
    task_id, sampler = view["task_id"], view["sampler_hotkey"]
    assert view["first_frame_url"].startswith(devnet.api_url + "media/")  # not a file:// URL
    video = next(m for m in view["miners"] if m["video_url"] and m["verdicts"] and m["verdicts"][0]["reasoning"])
    with Browser(tmp_path) as b:
        b.goto(devnet.api_url + f"task/{task_id}")
        assert b.wait_for("document.getElementById('first-frame')?.naturalWidth") > 0
        sel = f"document.querySelector('video.miner-video[data-hotkey=\"{video['miner_hotkey']}\"]')"
        assert b.wait_for(f"{sel}?.readyState >= 1 && {sel}.duration") > 0
        assert b.eval("document.querySelectorAll('#aspect-chart circle.pt').length") > 0
        text = b.eval("document.getElementById('stage').textContent")
        assert ("PASSED" in text or "FAILED" in text) and video["verdicts"][0]["reasoning"] in text
        assert_picture(keep(b.screenshot(tmp_path / "devnet-task.png")))
    # the bytes a player asks for, from the sampler's bucket
    key = video["video_url"].split(f"/media/{sampler}/", 1)[1]
    on_disk = (devnet.bucket_path(next(n for n in devnet.validators if n.hotkey == sampler)) / validate_key(key)).read_bytes()
    part = httpx.get(video["video_url"], headers={"Range": "bytes=32-4127"}, timeout=30)
    assert part.status_code == 206 and part.content == on_disk[32:4128]
    assert part.headers["content-range"] == f"bytes 32-4127/{len(on_disk)}"
    base = devnet.api_url.rstrip("/")
    for refused in (f"{task_id}/metadata.json", f"{task_id}/evaluation_results/{sampler}.json",
                    f"{task_id}/generated_videos/../original_clip.mp4", "../../devnet.json"):
        assert raw_get(base, f"/media/{sampler}/{refused}")[0] == 404, refused


@pytest.fixture(scope="module")
def settled(devnet: Devnet, decided: str) -> str:
    """The devnet with its validators stopped and everything they published imported by the API.

    The live devnet keeps adding tasks, verdicts and validator series; a page load and an API
    read then see different moments. Stopped (the world and the API stay up), the validators'
    buckets no longer change, so once the API holds every event each one published, every
    read, the browser's and the test's, is of one snapshot. Tests that compare two reads use it;
    they run after the tests that need the live devnet.
    """
    from leoma.mirror.out import uploaded_position

    for node in devnet.validators:
        assert devnet.stop_node(node.name) == 0, f"{node.name} did not stop cleanly"
    published = {}
    for node in devnet.validators:
        with EventLog(devnet.db_path(node), readonly=True) as log:
            published[node.hotkey] = uploaded_position(log, node.hotkey)
    assert all(published.values()), published

    def imported() -> dict[str, int]:
        try:
            log = EventLog(devnet.api_dir / "api.db", readonly=True)
        except LogError:
            return {}
        with log:
            return {hotkey: log.head(hotkey).origin_seq for hotkey in published}

    assert devnet.wait_for(lambda: imported() == published, timeout=120, poll=0.5), (imported(), published)
    return decided


def test_miner_page_charts_its_verdicts_per_validator(devnet: Devnet, settled: str, tmp_path: Path) -> None:
    history = httpx.get(devnet.api_url + f"miners/{settled}/history", timeout=30).json()
    expected = sorted((s["validator_hotkey"], p["task_id"]) for s in history["validators"] for p in s["points"])
    assert expected
    with Browser(tmp_path) as b:
        b.goto(devnet.api_url + f"miner/{settled}")
        b.wait_for("document.querySelectorAll('#history-chart circle.pt').length > 0")
        # one point per verdict of each validator, coloured by validator: the API's history exactly
        shown = b.eval("[...document.querySelectorAll('#history-chart circle.pt')]"
                       ".map(c => [c.dataset.validator, Number(c.dataset.task)])")
        assert sorted((v, t) for v, t in shown) == expected
        assert_picture(keep(b.screenshot(tmp_path / "devnet-miner.png")))


def signed_get(url: str, path: str, uri: str) -> Any:
    from leoma.api.client import ApiClient

    with ApiClient(url, keypair_from_uri(uri)) as client:
        return client.request("GET", path, None, signed=True)


def test_every_seed_read_route_answers_with_the_seeds_fields(devnet: Devnet, settled: str) -> None:
    url = devnet.api_url.rstrip("/")
    validator = devnet.validators[0]
    miner = settled
    uid = devnet.sim.state().uid(miner)

    def get(path: str) -> Any:
        r = httpx.get(url + path, timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()

    fields(get("/health"), "status version database metagraph_synced last_sync")
    overview = get("/overview")
    fields(overview, "active_miners valid_miners total_miners total_validators permissioned_validators "
                     "rotation_interval current_sampler latest_task_id window_start window_end")
    assert overview["total_validators"] == len(devnet.validators) and overview["winner"] == miner
    listing = get("/miners/list")
    fields(listing, "miners total valid_count")
    assert listing["total"] == len(CONFIG.miners)
    for m in listing["miners"]:
        fields(m, MINER)
    for path in ("/miners/valid", "/miners/all"):  # signed by an allowlisted validator
        signed = signed_get(url, path, validator.uri)
        fields(signed, "miners total valid_count")
        assert miner in {m["hotkey"] for m in signed["miners"]}
    fields(get(f"/miners/uid/{uid}"), MINER)
    assert get(f"/miners/info/{miner}")["uid"] == uid
    active = get("/miners/active")
    assert active[0]["hotkey"] == miner
    fields(active[0], "uid hotkey model_name model_revision chute_slug block active eligible rank weight score "
                      "tasks_passed tasks_evaluated validators_evaluating last_evaluated_at avg_latency_ms "
                      "validator_scores")
    tasks = get(f"/miners/{miner}/tasks")
    assert tasks and get(f"/tasks?miner_hotkey={miner}") == tasks
    fields(tasks[0], "task_id passed validator_hotkey overall_score latency_ms updated")
    samples = get("/samples/list")
    assert samples
    fields(samples[0], SAMPLE)
    sample = next(s for s in samples if s["miner_hotkey"] == miner)
    task_id, sampler = sample["task_id"], sample["validator_hotkey"]
    sampler_uri = next(n.uri for n in devnet.validators if n.hotkey == sampler)
    for path in (f"/samples/task?validator_hotkey={sampler}&task_id={task_id}", f"/samples/validator/{sampler}",
                 f"/samples/miner/{miner}"):
        rows = signed_get(url, path, sampler_uri)
        assert rows, path
        fields(rows[0], SAMPLE)
    detail = get(f"/tasks/{task_id}")
    fields(detail, "task_id description s3_prefix first_frame_path original_clip_path first_frame_url "
                   "original_clip_url miner_count sampler_hotkey miners")
    assert detail["sampler_hotkey"] == sampler and detail["first_frame_url"]  # presigned from its bucket
    fields(detail["miners"][0], "miner_hotkey passed latency_ms updated")
    one = get(f"/tasks/{task_id}/miner/{miner}")
    fields(one, "task_id miner_hotkey description s3_prefix first_frame_path original_clip_path generated_video_path "
                "first_frame_url original_clip_url generated_video_url validators final_passed latency_ms")
    fields(one["validators"][0], "validator_hotkey passed evaluated_at confidence reasoning aspect_scores overall_score")
    recent = get("/tasks/recent")
    assert recent and "generated_video_url" in recent[0]["miners"][0]
    scores = get("/scores")
    fields(scores, "scores total_validators updated_at")
    fields(scores["scores"][miner], "avg_score total_samples total_passed pass_rate validator_count")
    rank = get("/scores/rank")
    assert rank["ranks"][0]["miner_hotkey"] == miner and rank["reproduced"] is True
    fields(rank["ranks"][0], "miner_hotkey uid rank passed_count pass_rate block eligible")
    validators = get("/scores/validators")
    fields(validators[0], "validator_hotkey total_samples total_passed avg_score pass_rate last_updated")
    by_miner = get(f"/scores/miner/{miner}")
    fields(by_miner, "miner_hotkey by_validator aggregated")
    fields(by_miner["by_validator"][0], "validator_hotkey score total_samples total_passed pass_rate updated_at")
    # A validator with samples in the current window (the window moves while the devnet runs).
    scoring = next(v["validator_hotkey"] for v in validators if v["total_samples"] > 0)
    fields(get(f"/scores/validator/{scoring}"), "validator_hotkey scores total_miners")
    fields(get("/scores/stats"), "total_validators total_miners total_samples total_score_entries overall_pass_rate")
    assert get("/scores/history")
    weights = get("/weights")
    fields(weights, "winner_uid miners")
    assert weights["winner_uid"] == uid and weights["miners"][0]["miner_hotkey"] == miner
    epochs = get("/epochs")
    assert epochs["split"] is False and all(v["agrees"] for v in epochs["validators"])
    cards = get("/validators")
    assert {c["hotkey"] for c in cards} == {n.hotkey for n in devnet.validators}
    for card in cards:
        fields(card, CARD)
    fields(get(f"/validators/{validator.hotkey}"), CARD + " miner_scores")
    assert get("/blacklist") == [] and get("/blacklist/miners") == []
    history = get("/admin/history")
    assert {h["target"] for h in history} >= {n.hotkey for n in devnet.validators}  # the owner registered them


def test_the_dashboard_outlives_the_devnet(devnet: Devnet, decided: str) -> None:
    """Last in this file: it stops the devnet. The API stays up, then `leoma dashboard` serves it again."""
    url = devnet.api_url
    devnet.stop(keep_api=True)
    assert devnet.procs == {} and devnet.world is None
    assert httpx.get(url + "scores/rank", timeout=30).json()["winner"] == decided
    devnet.stop_api()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "health", timeout=5)
    leoma = Path(sys.executable).with_name("leoma")
    proc = subprocess.Popen([str(leoma), "dashboard", "--dir", str(devnet.root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=120)
        assert first.startswith("dashboard: http://127.0.0.1:"), first
        again = first.split()[1]
        assert httpx.get(again + "scores/rank", timeout=30).json()["winner"] == decided
        view = _task_with_videos(again)
        assert httpx.get(view["first_frame_url"], timeout=30).status_code == 200
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        rest = []
        while True:
            try:
                rest.append(lines.get(timeout=5))
            except queue.Empty:
                break
        assert "dashboard stopped.\n" in rest, rest
        with pytest.raises(httpx.HTTPError):
            httpx.get(again + "health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
