"""Signed writes: the seed's headers, expiry, replay refusal, allowlist and admin checks, limits.

Every refused request is checked to leave the API's log exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from leoma.api.app import create_app
from leoma.api.auth import sign_headers
from tests.test_api import NOW, World, api_world, key, service_for


@pytest.fixture
def world(tmp_path: Any) -> World:
    return api_world(tmp_path)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service_for(world, max_body_size=2_097_152))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c


def sign(signer: Any, data: Any = None, *, ts: int = NOW, raw: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    body = raw if raw is not None else (json.dumps(data).encode() if data is not None else b"")
    return body, {"Content-Type": "application/json", **sign_headers(signer, body, ts)}


def report(miner: str, *, valid: bool = True, **extra: Any) -> dict[str, Any]:
    return {"miners": [{"uid": 3, "miner_hotkey": miner, "is_valid": valid, **extra}]}


async def post(client: httpx.AsyncClient, path: str, signer: Any, data: Any = None, **kw: Any) -> httpx.Response:
    body, headers = sign(signer, data, **kw)
    return await client.post(path, content=body, headers=headers)


async def refused(client: httpx.AsyncClient, world: World, status: int, detail: str, method: str, path: str,
                  *, content: bytes = b"", headers: dict[str, str] | None = None) -> None:
    before = world.log.last_seq()
    r = await client.request(method, path, content=content, headers=headers or {})
    assert r.status_code == status, r.text
    assert detail, "name the detail the refusal must give ('' is in every message)"
    assert detail in r.json()["detail"], r.json()
    assert world.log.last_seq() == before, "a refused request wrote to the log"


async def test_validator_report_is_recorded_and_counted(client: httpx.AsyncClient, world: World) -> None:
    alice, bob = world.keys["Alice"], world.keys["Bob"]
    m3 = world.miners[2]
    for v in (alice, bob):
        r = await post(client, "/miners/report", v, report(m3, model_name="leoma-x"))
        assert r.status_code == 200 and r.json() == {"reported": 1}
    assert world.log.count(kind="miner_report_received") == 2
    row = (await client.get(f"/miners/info/{m3}")).json()
    assert row["is_valid"] is True and row["votes_total"] == 2 and row["model_name"] == "leoma-x"


async def test_large_report_spans_events_and_replaces_the_previous(client: httpx.AsyncClient, world: World) -> None:
    alice = world.keys["Alice"]
    many = [{"uid": i, "miner_hotkey": key(f"//M{i}").ss58_address, "is_valid": True} for i in range(70)]
    assert (await post(client, "/miners/report", alice, {"miners": many})).json() == {"reported": 70}
    assert world.log.count(kind="miner_report_received") == 3
    # The mirrored checks (stamped long before) are stale next to the posted report.
    listing = (await client.get("/miners/list")).json()
    assert listing["total"] == 70
    assert (await post(client, "/miners/report", alice, {"miners": many[:1]}, ts=NOW + 1)).status_code == 200
    assert (await client.get("/miners/list")).json()["total"] == 1


async def test_unsigned_request_is_refused(client: httpx.AsyncClient, world: World) -> None:
    await refused(client, world, 422, "Missing header X-Validator-Hotkey", "POST", "/miners/report",
                  content=json.dumps(report(world.miners[2])).encode())


async def test_stale_and_future_timestamps_are_refused(client: httpx.AsyncClient, world: World) -> None:
    for ts in (NOW - 301, NOW + 301):
        body, headers = sign(world.keys["Alice"], report(world.miners[2]), ts=ts)
        await refused(client, world, 401, "Timestamp expired (max 300s)", "POST", "/miners/report",
                      content=body, headers=headers)
    body, headers = sign(world.keys["Alice"], report(world.miners[2]))
    await refused(client, world, 401, "Invalid timestamp format", "POST", "/miners/report", content=body,
                  headers={**headers, "X-Timestamp": "soon"})


async def test_replayed_request_is_refused(client: httpx.AsyncClient, world: World) -> None:
    body, headers = sign(world.keys["Alice"], report(world.miners[2]))
    assert (await client.post("/miners/report", content=body, headers=headers)).status_code == 200
    await refused(client, world, 401, "Replayed request", "POST", "/miners/report", content=body, headers=headers)


async def test_wrong_signatures_are_refused(client: httpx.AsyncClient, world: World) -> None:
    alice, bob = world.keys["Alice"], world.keys["Bob"]
    body, headers = sign(bob, report(world.miners[2]))
    await refused(client, world, 401, "Invalid signature", "POST", "/miners/report", content=body,
                  headers={**headers, "X-Validator-Hotkey": alice.ss58_address})
    body, headers = sign(alice, report(world.miners[2]))
    tampered = body.replace(b"true", b"false")
    await refused(client, world, 401, "Invalid signature", "POST", "/miners/report", content=tampered, headers=headers)
    for garbage, status, detail in (
        ("0xzz", 401, "Invalid signature: not hex"),
        ("0x" + "00" * 10, 401, "Invalid signature: 10 bytes, an sr25519 signature is 64"),
        ("", 422, "Missing header X-Signature"),
        ("0x" + "ab" * 64, 401, "Invalid signature"),  # well formed, signs nothing
    ):
        await refused(client, world, status, detail, "POST", "/miners/report", content=body,
                      headers={**headers, "X-Signature": garbage})


async def test_non_allowlisted_hotkey_is_refused(client: httpx.AsyncClient, world: World) -> None:
    body, headers = sign(world.keys["Dave"], report(world.miners[2]))
    await refused(client, world, 403, "Validator not registered", "POST", "/miners/report", content=body,
                  headers=headers)


async def test_non_admin_on_admin_routes(client: httpx.AsyncClient, world: World) -> None:
    alice = world.keys["Alice"]
    for method, path, data in (
        ("POST", "/blacklist", {"hotkey": world.miners[0]}),
        ("DELETE", f"/blacklist/{world.miners[0]}", None),
        ("POST", "/validators", {"hotkey": world.miners[0], "uid": 5}),
        ("DELETE", f"/validators/{world.validators[0]}", None),
        ("POST", "/rotation/interval", {"interval": 10}),
    ):
        body, headers = sign(alice, data)
        await refused(client, world, 403, "Admin access required", method, path, content=body, headers=headers)


async def test_malformed_json_and_wrong_types(client: httpx.AsyncClient, world: World) -> None:
    alice = world.keys["Alice"]
    for raw, detail in ((b"{not json", "Malformed JSON"), (b'{"miners": "all"}', "Invalid request body"),
                        (b'{"miners": [{"uid": "1", "miner_hotkey": "x"}]}', "Invalid request body"),
                        (b"", "Request body is empty")):
        body, headers = sign(alice, raw=raw)
        await refused(client, world, 422, detail, "POST", "/miners/report", content=body, headers=headers)


async def test_oversized_bodies_are_refused(client: httpx.AsyncClient, world: World) -> None:
    big = b"x" * (50 * 1024 * 1024)
    await refused(client, world, 413, "Request body too large", "POST", "/miners/report", content=big,
                  headers={"Content-Type": "application/json"})

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(50):
            yield b"x" * (1024 * 1024)

    before = world.log.last_seq()
    r = await client.post("/samples/batch", content=stream(), headers=sign(world.keys["Alice"], raw=b"")[1])
    assert r.status_code == 413 and r.json() == {"detail": "Request body too large"}
    assert world.log.last_seq() == before


@pytest.mark.parametrize("evil", ["'; DROP TABLE events; --", "../../etc/passwd", "5F\x00<script>", "a/b\\c"])
async def test_injection_in_hotkey_fields_is_refused(client: httpx.AsyncClient, world: World, evil: str) -> None:
    alice, admin = world.keys["Alice"], world.admin
    body, headers = sign(alice, report(evil))
    await refused(client, world, 422, "miner_hotkey", "POST", "/miners/report", content=body, headers=headers)
    sample = {"task_id": 1, "miner_hotkey": evil, "prompt": "p", "passed": True}
    body, headers = sign(alice, {"samples": [sample]})
    await refused(client, world, 422, "samples[0].miner_hotkey: Invalid SS58 address format", "POST", "/samples/batch",
                  content=body, headers=headers)
    body, headers = sign(admin, {"hotkey": evil, "reason": "r"})
    await refused(client, world, 422, "hotkey: Invalid SS58 address format", "POST", "/blacklist", content=body,
                  headers=headers)
    body, headers = sign(admin, {"hotkey": evil, "uid": 4})
    await refused(client, world, 400, "Invalid SS58 address format", "POST", "/validators", content=body,
                  headers=headers)


@pytest.mark.parametrize("evil", ["'; DROP TABLE events; --", "../../etc/passwd", "<img src=x onerror=alert(1)>"])
async def test_free_text_is_stored_verbatim(client: httpx.AsyncClient, world: World, evil: str) -> None:
    r = await post(client, "/miners/report", world.keys["Alice"],
                   report(world.miners[2], valid=False, model_name=evil, invalid_reason=evil, chute_slug=evil))
    assert r.status_code == 200
    r = await post(client, "/blacklist", world.admin, {"hotkey": world.miners[1], "reason": evil})
    assert r.status_code == 200 and r.json()["reason"] == evil
    row = (await client.get(f"/miners/info/{world.miners[2]}")).json()
    assert row["model_name"] == evil
    assert world.log.verify().ok


async def test_admin_hotkeys_are_stripped_and_actions_audited(client: httpx.AsyncClient, world: World) -> None:
    admin, m1, m2 = world.admin, world.miners[0], world.miners[1]
    r = await post(client, "/blacklist", admin, {"hotkey": m1, "reason": "copycat"})
    assert r.status_code == 200
    fields = r.json()
    assert fields["hotkey"] == m1 and fields["reason"] == "copycat" and fields["added_by"] == admin.ss58_address
    assert (await client.get("/blacklist/miners")).json() == [m1]
    assert (await client.get(f"/miners/info/{m1}")).json()["invalid_reason"] == "blacklisted"
    r = await post(client, "/blacklist", admin, {"hotkey": m2}, ts=NOW + 1)
    assert r.status_code == 200 and r.json()["reason"] is None
    body, headers = sign(admin)
    r = await client.delete(f"/blacklist/{m1}", headers=headers)
    assert r.json() == {"success": True, "message": f"Removed miner {m1[:8]}... from blacklist",
                        "removed_by": admin.ss58_address}
    body, headers = sign(admin, ts=NOW + 2)
    assert (await client.delete(f"/blacklist/{m1}", headers=headers)).json() == {"detail": "Miner not blacklisted"}
    history = (await client.get("/admin/history")).json()
    assert [(h["action"], h["target"]) for h in history] == [
        ("blacklist_remove", m1), ("blacklist_add", m2), ("blacklist_add", m1)]
    assert all(h["admin"] == admin.ss58_address for h in history)
    assert world.log.count(kind="admin_acted") == 3


async def test_validator_registry(client: httpx.AsyncClient, world: World) -> None:
    admin = world.admin
    carol = key("//Carol")
    r = await post(client, "/validators", admin, {"hotkey": f"  {carol.ss58_address} ", "uid": 7, "stake": 1.5})
    assert r.status_code == 200
    assert r.json() == {"success": True, "uid": 7, "hotkey": carol.ss58_address, "stake": 1.5,
                        "added_by": admin.ss58_address}
    # The new validator may now report.
    assert (await post(client, "/miners/report", carol, report(world.miners[2]))).status_code == 200
    # uid taken by another hotkey: refused, nothing replaced (seed §12.32).
    dan = key("//Dan")
    r = await post(client, "/validators", admin, {"hotkey": dan.ss58_address, "uid": 7}, ts=NOW + 1)
    assert r.status_code == 409 and "already registered" in r.json()["detail"]
    # uid resolved from the metagraph the validators observed.
    r = await post(client, "/validators", admin, {"hotkey": world.miners[1]}, ts=NOW + 2)
    assert r.status_code == 200 and r.json()["uid"] == 2
    r = await post(client, "/validators", admin, {"hotkey": dan.ss58_address}, ts=NOW + 3)
    assert r.status_code == 404 and "not found on the subnet metagraph" in r.json()["detail"]
    listed = {c["hotkey"]: c for c in (await client.get("/validators")).json()}
    assert listed[carol.ss58_address]["uid"] == 7 and listed[carol.ss58_address]["permissioned"] is True
    _, headers = sign(admin, ts=NOW + 4)
    r = await client.delete(f"/validators/{carol.ss58_address}", headers=headers)
    assert r.status_code == 200 and r.json()["removed_by"] == admin.ss58_address
    _, headers = sign(admin, ts=NOW + 5)
    r = await client.delete(f"/validators/{carol.ss58_address}", headers=headers)
    assert r.status_code == 404 and r.json() == {"detail": "Validator not registered"}
    body, headers = sign(carol, report(world.miners[2]), ts=NOW + 6)
    await refused(client, world, 403, "Validator not registered", "POST", "/miners/report", content=body,
                  headers=headers)


async def test_rotation_interval(client: httpx.AsyncClient, world: World) -> None:
    assert (await post(client, "/rotation/interval", world.admin, {"interval": 7})).json() == {"interval": 7}
    body, headers = sign(world.admin, {"interval": 0}, ts=NOW + 1)
    await refused(client, world, 422, "Invalid request body", "POST", "/rotation/interval", content=body,
                  headers=headers)


async def test_sample_batches(client: httpx.AsyncClient, world: World) -> None:
    alice = world.keys["Alice"]
    m1 = world.miners[0]

    def s(task: int, **extra: Any) -> dict[str, Any]:
        return {"task_id": task, "miner_hotkey": m1, "prompt": "p", "passed": True, **extra}

    mine = next(t for t in range(2, 12) if world.validators[t % 2] == alice.ss58_address)

    before = world.log.last_seq()
    r = await post(client, "/samples/batch", alice, {"samples": []})
    assert r.status_code == 200 and r.json() == []
    r = await post(client, "/samples/batch", alice, {"samples": [s(mine)] * 100, "signature": "0xab"}, ts=NOW + 1)
    assert r.status_code == 200 and len(r.json()) == 100
    ack = r.json()[0]
    assert ack["validator_hotkey"] == alice.ss58_address and ack["id"] is not None
    assert world.log.last_seq() == before, "samples are read from the validators' mirrors, not stored twice"
    for i, (data, status, detail) in enumerate((
        ({"samples": [s(4)] * 101}, 400, "Batch size exceeds limit of 100 samples"),
        ({"samples": [s(4), s(5)], "signature": "0xab"}, 400, "exactly one task_id"),
        ({"samples": [s(4, reasoning="r" * 4097)]}, 422, "Invalid request body"),
        ({"samples": [s(4, confidence=101)]}, 422, "Invalid request body"),
    )):
        body, headers = sign(alice, data, ts=NOW + 2 + i)
        await refused(client, world, status, detail, "POST", "/samples/batch", content=body, headers=headers)


async def test_signed_reads(client: httpx.AsyncClient, world: World) -> None:
    alice = world.keys["Alice"]
    assert (await client.get("/miners/valid")).status_code == 422
    _, headers = sign(alice)
    r = await client.get("/miners/valid", headers=headers)
    assert r.status_code == 200 and r.json()["valid_count"] == 2
    _, headers = sign(alice, ts=NOW + 1)
    r = await client.get("/samples/task", params={"validator_hotkey": world.validators[0], "task_id": 4},
                         headers=headers)
    assert r.status_code == 200 and [x["miner_hotkey"] for x in r.json()] == sorted(world.miners[:2])
    _, headers = sign(alice, ts=NOW + 2)
    r = await client.get(f"/samples/miner/{world.miners[0]}", headers=headers)
    assert r.status_code == 200 and len(r.json()) == 10
    _, headers = sign(alice, ts=NOW + 3)
    assert (await client.get(f"/miners/{world.miners[0]}", headers=headers)).json()["uid"] == 1


async def test_cors_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Origin": "https://dash.example"})
    assert r.headers["access-control-allow-origin"] in ("*", "https://dash.example")
