"""The owner's API: every seed read route answers with the seed's fields, from the API's log.

`api_world()` builds the log the API would hold after importing two validators' mirrors: an
allowlist, a metagraph, miner checks, ten tasks with responses and verdicts, and each
validator's epoch decision (one of them disagreeing). Other API test files import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from leoma.adapters.signing import keypair_from_uri
from leoma.api.app import create_app
from leoma.api.service import ApiService
from leoma.api.settings import ApiSettings
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import EventLog
from leoma.log.events import EpochScored, MinerResponded, WeightEntry
from projections.epoch import score_epoch
from tests.builders import NETUID, LogBuilder

API_ID = "owner-api"
NOW = 1_800_000_000
INTERVAL = 50


@dataclass
class World:
    validators: list[str]
    miners: list[str]
    admin: Any
    keys: dict[str, Any]
    log: EventLog
    path: Path
    winner: str
    epoch: int


def key(uri: str) -> Any:
    return keypair_from_uri(uri)


def api_world(tmp_path: Path, *, disagree: bool = True) -> World:
    """The API's log after importing two validators' mirrors (see the module docstring)."""
    keys = {name: key(f"//{name}") for name in ("Alice", "Bob", "Charlie", "Dave", "Eve", "Ferdie")}
    validators = sorted([keys["Alice"].ss58_address, keys["Bob"].ss58_address])
    m1, m2, m3 = keys["Charlie"].ss58_address, keys["Dave"].ss58_address, keys["Eve"].ss58_address
    b = LogBuilder()
    for v in validators:
        b.allowlist(v, validators, interval=INTERVAL, block=1)
        b.metagraph(v, ["owner", m1, m2, m3], block=1)
        b.checked(v, m1, uid=1, block=2, commit_block=10)
        b.checked(v, m2, uid=2, block=2, commit_block=20)
        b.checked(v, m3, uid=3, block=2, valid=False, reason="chute_not_running")
    for t in range(2, 12):
        sampler = validators[t % 2]
        b.opened(sampler, t, block=t * INTERVAL + 1, interval=INTERVAL, miners=[m1, m2])
        for m in (m1, m2):
            b.add(sampler, MinerResponded(task_id=t, miner=m, status="accepted", latency_ms=1000 + t,
                                          object_key=f"{t}/generated_videos/{m}.mp4"),
                  block=t * INTERVAL + 2, key=f"response/{t}/{m}")
        b.verdict(sampler, t, m1, True, block=t * INTERVAL + 5)
        b.verdict(sampler, t, m2, t % 2 == 0, block=t * INTERVAL + 5)
    epoch = (12 * INTERVAL) // DEFAULT.epoch.length
    rows = b.rows()
    decided = {}
    for v in validators:
        decided[v] = score_epoch(rows, own=v, epoch=epoch, epoch_block=epoch * DEFAULT.epoch.length,
                                 netuid=NETUID, consensus=DEFAULT)
    for i, v in enumerate(validators):
        d = decided[v]
        if disagree and i == 1:
            d = EpochScored(epoch=epoch, netuid=NETUID, consensus_digest=DEFAULT.digest, frontier=(),
                            winner_uid=0, weights=(WeightEntry(uid=0, weight=65535),), burn_reason="no metagraph")
        b.add(v, d, block=epoch * DEFAULT.epoch.length, key=f"epoch/{epoch}/scored")
    path = tmp_path / "api.db"
    log = b.to_log(path, own=API_ID)
    return World(validators=validators, miners=[m1, m2, m3], admin=keys["Ferdie"], keys=keys, log=log, path=path,
                 winner=decided[validators[0]].winner, epoch=epoch)


def service_for(world: World, **overrides: Any) -> ApiService:
    env = {"ADMIN_HOTKEYS": f" {world.admin.ss58_address} , ", "LEOMA_API_ID": API_ID}
    settings = ApiSettings.load(env, **overrides)
    return ApiService(settings, DEFAULT, log_=world.log, clock=lambda: NOW)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return api_world(tmp_path)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service_for(world))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c


def fields(obj: dict[str, Any], names: str) -> None:
    missing = [n for n in names.split() if n not in obj]
    assert not missing, f"missing fields {missing} in {sorted(obj)}"


MINER = "uid hotkey model_name model_revision model_hash chute_id chute_slug is_valid invalid_reason block last_validated_at"
SAMPLE = "id task_id validator_hotkey miner_hotkey prompt passed confidence reasoning evaluated_at latency_ms"
CARD = ("uid hotkey stake permissioned online last_sampled_task_id last_sampled_at tasks_sampled expected_turns "
        "participation_rate evaluations avg_latency_ms")


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    fields(r.json(), "status version database metagraph_synced last_sync")
    assert r.json()["status"] == "healthy" and r.json()["metagraph_synced"] is True


async def test_overview(client: httpx.AsyncClient, world: World) -> None:
    r = (await client.get("/overview")).json()
    fields(r, "active_miners valid_miners total_miners total_validators permissioned_validators rotation_interval "
              "current_sampler latest_task_id window_start window_end")
    assert r["rotation_interval"] == INTERVAL
    assert r["valid_miners"] == 2 and r["total_miners"] == 3 and r["total_validators"] == 2
    assert r["latest_task_id"] == 11 and r["winner"] == world.winner
    assert r["window_start"] == 2 and r["window_end"] == 8


async def test_miners_routes(client: httpx.AsyncClient, world: World) -> None:
    listing = (await client.get("/miners/list")).json()
    fields(listing, "miners total valid_count")
    assert listing["total"] == 3 and listing["valid_count"] == 2
    for m in listing["miners"]:
        fields(m, MINER)
    invalid = next(m for m in listing["miners"] if m["hotkey"] == world.miners[2])
    assert invalid["is_valid"] is False and invalid["invalid_reason"] == "chute_not_running"
    by_uid = await client.get("/miners/uid/1")
    assert by_uid.status_code == 200 and by_uid.json()["hotkey"] == world.miners[0]
    assert (await client.get("/miners/uid/99")).json() == {"detail": "Miner not found"}
    info = await client.get(f"/miners/info/{world.miners[1]}")
    assert info.status_code == 200 and info.json()["uid"] == 2
    active = (await client.get("/miners/active")).json()
    assert [a["hotkey"] for a in active][0] == world.winner
    fields(active[0], "uid hotkey model_name model_revision chute_slug block active eligible rank weight score "
                      "tasks_passed tasks_evaluated validators_evaluating last_evaluated_at avg_latency_ms validator_scores")
    assert active[0]["weight"] == 1.0 and active[0]["eligible"] is True
    tasks = (await client.get(f"/miners/{world.miners[0]}/tasks")).json()
    assert [t["task_id"] for t in tasks] == list(range(11, 1, -1))
    fields(tasks[0], "task_id passed validator_hotkey overall_score latency_ms updated")
    same = (await client.get("/tasks", params={"miner_hotkey": world.miners[0]})).json()
    assert same == tasks


async def test_samples_and_tasks(client: httpx.AsyncClient, world: World) -> None:
    listed = (await client.get("/samples/list", params={"limit": 5})).json()
    assert len(listed) == 5
    fields(listed[0], SAMPLE)
    assert listed[0]["prompt"] == "a prompt"
    detail = (await client.get("/tasks/4")).json()
    fields(detail, "task_id description s3_prefix first_frame_path original_clip_path first_frame_url "
                   "original_clip_url miner_count sampler_hotkey miners")
    assert detail["first_frame_path"] == "4/first_frame.png" and detail["sampler_hotkey"] == world.validators[0]
    assert detail["miner_count"] == 2 and detail["miners"][0]["passed"] is True
    fields(detail["miners"][0], "miner_hotkey passed latency_ms updated")
    one = (await client.get(f"/tasks/4/miner/{world.miners[1]}")).json()
    fields(one, "task_id miner_hotkey description s3_prefix first_frame_path original_clip_path generated_video_path "
                "first_frame_url original_clip_url generated_video_url validators final_passed latency_ms")
    assert one["generated_video_path"] == f"4/generated_videos/{world.miners[1]}.mp4"
    fields(one["validators"][0], "validator_hotkey passed evaluated_at confidence reasoning aspect_scores overall_score")
    assert (await client.get("/tasks/999")).json() == {"detail": "Task not found"}
    missing = await client.get(f"/tasks/4/miner/{world.miners[2]}")
    assert missing.status_code == 404 and missing.json()["detail"] == "No evaluations for this task/miner"
    recent = (await client.get("/tasks/recent", params={"limit": 3})).json()
    assert [t["task_id"] for t in recent] == [11, 10, 9]
    assert "generated_video_url" in recent[0]["miners"][0]


async def test_scores_routes(client: httpx.AsyncClient, world: World) -> None:
    s = (await client.get("/scores")).json()
    fields(s, "scores total_validators updated_at")
    m1 = s["scores"][world.miners[0]]
    fields(m1, "avg_score total_samples total_passed pass_rate validator_count")
    assert m1["avg_score"] == 1.0 and m1["total_samples"] == 7 and m1["validator_count"] == 2
    rank = (await client.get("/scores/rank")).json()
    assert rank["ranks"][0]["miner_hotkey"] == world.winner and rank["ranks"][0]["rank"] == 1
    fields(rank["ranks"][0], "miner_hotkey uid rank passed_count pass_rate block eligible")
    assert rank["reference"] == world.validators[0] and rank["reproduced"] is True
    assert rank["short_of_frontier"] == 0 and isinstance(rank["past_frontier"], int)  # it holds all its frontier
    assert {r["validator_hotkey"] for r in rank["ranks"][0]["rates"]} == set(world.validators)
    vals = (await client.get("/scores/validators")).json()
    fields(vals[0], "validator_hotkey total_samples total_passed avg_score pass_rate last_updated")
    sm = (await client.get(f"/scores/miner/{world.miners[1]}")).json()
    fields(sm, "miner_hotkey by_validator aggregated")
    fields(sm["by_validator"][0], "validator_hotkey score total_samples total_passed pass_rate updated_at")
    sv = (await client.get(f"/scores/validator/{world.validators[0]}")).json()
    fields(sv, "validator_hotkey scores total_miners")
    stats = (await client.get("/scores/stats")).json()
    fields(stats, "total_validators total_miners total_samples total_score_entries overall_pass_rate")
    assert stats["total_samples"] == 20
    w = (await client.get("/weights")).json()
    fields(w, "winner_uid miners")
    assert w["winner_uid"] == 1 and w["miners"][0] == {"miner_hotkey": world.winner, "uid": 1,
                                                       "pass_rate": 1.0, "weight": 1.0}
    history = (await client.get("/scores/history")).json()
    assert history[-1]["epoch"] == world.epoch and history[-1]["lead"] > 0


async def test_validators_and_disagreement(client: httpx.AsyncClient, world: World) -> None:
    cards = (await client.get("/validators")).json()
    assert {c["hotkey"] for c in cards} == set(world.validators)
    for c in cards:
        fields(c, CARD)
        assert c["expected_turns"] > 0 and c["participation_rate"] == 1.0
        assert c["mirror"]["events"] > 0
    detail = (await client.get(f"/validators/{world.validators[1]}")).json()
    fields(detail, CARD + " miner_scores")
    epochs = (await client.get("/epochs")).json()
    assert epochs["disagreement"] is True and epochs["epoch"] == world.epoch
    agrees = {v["validator_hotkey"]: v["agrees"] for v in epochs["validators"]}
    assert epochs["split"] is True and not any(agrees.values())


async def test_blacklist_reads_empty(client: httpx.AsyncClient, world: World) -> None:
    assert (await client.get("/blacklist")).json() == []
    assert (await client.get("/blacklist/miners")).json() == []
    r = await client.get(f"/blacklist/{world.miners[0]}")
    assert r.status_code == 404 and r.json() == {"detail": "Miner not blacklisted"}


@pytest.mark.parametrize("path", [
    "/miners/info/{bad}", "/miners/{bad}/tasks", "/scores/miner/{bad}", "/scores/validator/{bad}",
    "/blacklist/{bad}", "/validators/{bad}", "/tasks/4/miner/{bad}",
])
@pytest.mark.parametrize("bad", ["notahotkey", "5' OR '1'='1", "..%2F..%2Fetc%2Fpasswd", "5" + "a" * 60])
async def test_bad_hotkeys_in_paths(client: httpx.AsyncClient, path: str, bad: str) -> None:
    r = await client.get(path.format(bad=bad))
    assert r.status_code in (400, 404)
    assert r.json()["detail"] in ("Invalid SS58 address format", "Not found")


async def test_unknown_hotkeys_in_paths(client: httpx.AsyncClient) -> None:
    unknown = key("//Unknown").ss58_address
    assert (await client.get(f"/miners/info/{unknown}")).status_code == 404
    assert (await client.get(f"/scores/miner/{unknown}")).json()["detail"] == "No scores for this miner in the current window"
    assert (await client.get(f"/scores/validator/{unknown}")).status_code == 404
    card = (await client.get(f"/validators/{unknown}")).json()
    assert card["known"] is False and card["uid"] == -1 and card["permissioned"] is False
    assert (await client.get(f"/miners/{unknown}/tasks")).json() == []


async def test_query_validation(client: httpx.AsyncClient) -> None:
    r = await client.get("/samples/list", params={"limit": "0"})
    assert r.status_code == 422 and "between 1 and 500" in r.json()["detail"]
    r = await client.get("/samples/list", params={"limit": "1; DROP TABLE events"})
    assert r.status_code == 422
    assert (await client.get("/tasks")).status_code == 422
    assert (await client.get("/nowhere")).json() == {"detail": "Not found"}


async def test_empty_log_answers(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "empty.db", own=API_ID)
    service = ApiService(ApiSettings.load({}), DEFAULT, log_=log, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(service)), base_url="http://api") as c:
        for path in ("/health", "/overview", "/miners/list", "/miners/active", "/scores", "/scores/rank",
                     "/scores/stats", "/scores/validators", "/weights", "/validators", "/epochs", "/samples/list",
                     "/tasks/recent", "/scores/history", "/admin/history", "/"):
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
        assert (await c.get("/scores/rank")).json()["ranks"] == []


async def test_feeder_imports_an_allowlisted_validators_mirror(tmp_path: Path) -> None:
    from leoma.adapters.directory import DirectoryStore
    from leoma.api.feed import Feeder
    from leoma.log.events import AdminActed, AllowlistVerified, MinerChecked
    from leoma.mirror.out import MirrorOut

    alice, bob = key("//Alice"), key("//Bob")
    store = DirectoryStore(tmp_path / "alice-bucket")
    with EventLog(tmp_path / "alice.db", own=alice.ss58_address) as vlog:
        vlog.append(AllowlistVerified(owner_hotkey="o", digest="d" * 64, interval=INTERVAL,
                                      validators=(alice.ss58_address,)), key="allowlist/1", block=1)
        vlog.append(MinerChecked(hotkey=bob.ss58_address, uid=1, valid=True), key="miner/1", block=2)
        await MirrorOut(vlog, store, alice, DEFAULT.digest).push()
    log = EventLog(tmp_path / "api.db", own=API_ID)
    service = ApiService(ApiSettings.load({}), DEFAULT, log_=log, clock=lambda: NOW)
    service.feeder = Feeder(log, [], DEFAULT, stores={alice.ss58_address: store})
    assert await service.feeder.sync(service.allowed()) == []  # not allowlisted yet: nothing read
    log.append(AdminActed(admin="test", action="validator_add", target=alice.ss58_address, uid=0, stake_rao=0),
               key="admin/1", block=0)
    reports = await service.feeder.sync(service.allowed())
    assert [r.imported for r in reports] == [2]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(service)), base_url="http://api") as c:
        card = (await c.get(f"/validators/{alice.ss58_address}")).json()
        assert card["mirror"]["events"] == 2 and card["mirror"]["last_sync"]["imported"] == 2
        assert (await c.get("/miners/list")).json()["valid_count"] == 1
        assert (await c.get("/tasks/1")).status_code == 404
