"""Owner-API reports: the seed's signature headers, best effort, never blocking."""

from __future__ import annotations

import hashlib
import json

from bittensor_core import verify

from leoma.log.events import MinerChecked
from leoma.services.checker import check_miners
from leoma.services.reporter import miner_report_entry, report_samples, sign_request
from leoma.services.sampler import sample_turn
from leoma.adapters.signing import keypair_from_uri
from tests.validator_fixtures import OwnerApi, ValidatorWorld, owner_api, vworld  # noqa: F401


def assert_signed(headers: dict[str, str], body: bytes, hotkey: str) -> None:
    assert headers["x-validator-hotkey"] == hotkey
    message = f"{hashlib.sha256(body).hexdigest()}:{headers['x-timestamp']}".encode()
    assert verify(message, bytes.fromhex(headers["x-signature"][2:]), hotkey)


def test_signature_headers_follow_the_seed() -> None:
    kp = keypair_from_uri("//Bob")
    headers = sign_request(kp, b"", timestamp=1700000000)
    assert headers["X-Timestamp"] == "1700000000"
    # the empty body's hash, a colon, the timestamp: the string itself is signed
    message = b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855:1700000000"
    assert verify(message, bytes.fromhex(headers["X-Signature"][2:]), kp.ss58_address)


def test_report_entry_nulls_empty_fields() -> None:
    entry = miner_report_entry(MinerChecked(hotkey="5M", uid=3, valid=False, invalid_reason="chute_not_running",
                                            chute_id="c1"))
    assert entry == {"uid": 3, "miner_hotkey": "5M", "model_name": None, "model_revision": None, "model_hash": None,
                     "chute_id": "c1", "chute_slug": None, "block": None, "is_valid": False,
                     "invalid_reason": "chute_not_running"}


async def test_reports_after_a_check_and_a_task_are_signed(vworld: ValidatorWorld, owner_api: OwnerApi) -> None:
    v = vworld.validators[0]
    async with vworld.context(v, settings=vworld.settings(v, API_URL=owner_api.url)) as ctx:
        await check_miners(ctx)
        vworld.advance_to_turn(v)
        closed = await sample_turn(ctx)
    assert closed is not None
    (report_headers, report_body), = owner_api.posted("/miners/report")
    assert_signed(report_headers, report_body, v.ss58_address)
    (batch_headers, batch_body), = owner_api.posted("/samples/batch")
    assert_signed(batch_headers, batch_body, v.ss58_address)
    batch = json.loads(batch_body)
    assert len(batch["samples"]) == closed.evaluated
    assert {s["task_id"] for s in batch["samples"]} == {closed.task_id}
    assert batch["signature"].startswith("0x") and all(s["s3_prefix"] == str(closed.task_id) for s in batch["samples"])


async def test_a_failing_api_never_blocks(vworld: ValidatorWorld, owner_api: OwnerApi) -> None:
    owner_api.fail = True
    v = vworld.validators[0]
    async with vworld.context(v, settings=vworld.settings(v, API_URL=owner_api.url)) as ctx:
        sample = {"task_id": 1, "miner_hotkey": "5M", "prompt": "p", "passed": True, "reasoning": "r" * 10_000,
                  "generated_artifacts": "g" * 20_000}
        assert await report_samples(ctx, 1, [sample] * 150, "0xsig") is False
    posted = owner_api.posted("/samples/batch")
    assert [len(json.loads(b)["samples"]) for _, b in posted] == [100, 50]  # the API's batch limit
    first = json.loads(posted[0][1])["samples"][0]
    assert len(first["reasoning"]) == 4096 and len(first["generated_artifacts"]) == 8192


async def test_unreachable_api_is_logged_not_raised(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    settings = vworld.settings(v, API_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    async with vworld.context(v, settings=settings) as ctx:
        results = await check_miners(ctx)
    assert any(r.valid for r in results)
