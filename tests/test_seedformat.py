"""The seed's bucket layout and verdict file: vectors, and every rejection the seed let through."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from bittensor_core import Keypair

from leoma.errors import SignatureError, StorageError
from leoma.mirror.seedformat import (
    first_frame_key,
    generated_video_key,
    metadata_key,
    original_clip_key,
    parse_verdict_key,
    read_verdict_file,
    safe_name,
    sign_verdict_file,
    verdict_digest,
    verdict_key,
)

VECTOR = [
    {"hotkey": "5MinerA", "passed": True, "status": "passed"},
    {"hotkey": "5MinerB", "passed": False, "status": "failed"},
]
VECTOR_CANONICAL = (
    '[{"hotkey": "5MinerA", "passed": true, "status": "passed"}, '
    '{"hotkey": "5MinerB", "passed": false, "status": "failed"}]'
)
VECTOR_SHA256 = "65c432abd4cc21b8d08f4d16535bf437aed84db506a708067ca08f4e888dffad"


@pytest.fixture(scope="module")
def alice() -> Keypair:
    return Keypair.create_from_uri("//Alice")


@pytest.fixture(scope="module")
def bob() -> Keypair:
    return Keypair.create_from_uri("//Bob")


# ---- keys -----------------------------------------------------------------------------------


def test_task_keys() -> None:
    assert first_frame_key(42) == "42/first_frame.png"
    assert original_clip_key(42) == "42/original_clip.mp4"
    assert metadata_key(0) == "0/metadata.json"
    assert generated_video_key(42, "5MinerA") == "42/generated_videos/5MinerA.mp4"
    assert verdict_key(42, "5Validator") == "42/evaluation_results/5Validator.json"


def test_safe_name_replaces_slashes_and_backslashes() -> None:
    assert safe_name("a/b\\c") == "a_b_c"
    assert generated_video_key(1, "../../etc") == "1/generated_videos/.._.._etc.mp4"
    assert verdict_key(1, "..") == "1/evaluation_results/...json"


@pytest.mark.parametrize("task_id", [-1, True, "7", 1.0])
def test_task_id_must_be_a_rotation_index(task_id: Any) -> None:
    with pytest.raises(StorageError, match="task id"):
        metadata_key(task_id)


@pytest.mark.parametrize("hotkey", ["", "nul\x00"])
def test_unusable_hotkeys_are_refused(hotkey: str) -> None:
    with pytest.raises(StorageError):
        verdict_key(3, hotkey)


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("12/evaluation_results/5Val.json", (12, "5Val")),
        ("0/evaluation_results/x.json", (0, "x")),
        ("12/evaluation_results/.json", None),
        ("x12/evaluation_results/5Val.json", None),
        ("-1/evaluation_results/5Val.json", None),
        ("١٢/evaluation_results/5Val.json", None),  # non-ASCII digits are not a task id
        ("12/generated_videos/5Val.mp4", None),
        ("12/evaluation_results/5Val.txt", None),
        ("a/12/evaluation_results/5Val.json", None),
    ],
)
def test_parse_verdict_key(key: str, parsed: tuple[int, str] | None) -> None:
    assert parse_verdict_key(key) == parsed


# ---- signing ----------------------------------------------------------------------------------


def test_verdict_digest_matches_the_seed_vector() -> None:
    assert json.dumps(VECTOR, sort_keys=True) == VECTOR_CANONICAL
    assert verdict_digest(VECTOR).hex() == VECTOR_SHA256
    assert hashlib.sha256(VECTOR_CANONICAL.encode()).hexdigest() == VECTOR_SHA256


def test_signed_file_has_the_seed_shape_and_verifies(alice: Keypair) -> None:
    raw = sign_verdict_file(VECTOR, alice)
    wrapper = json.loads(raw)
    assert list(wrapper) == ["signature", "data"]
    assert raw == json.dumps({"signature": wrapper["signature"], "data": VECTOR}, indent=2).encode()
    sig = wrapper["signature"]
    assert sig.startswith("0x") and len(sig) == 2 + 128
    assert alice.verify(bytes.fromhex(VECTOR_SHA256), bytes.fromhex(sig[2:]))
    assert read_verdict_file(raw, alice.ss58_address) == VECTOR


def test_unicode_and_numbers_survive_the_round_trip(alice: Keypair) -> None:
    entries = [{"hotkey": "5Mé", "passed": True, "score": 0.1 + 0.2, "n": 10**20, "reason": "ok\n"}]
    assert read_verdict_file(sign_verdict_file(entries, alice), alice.ss58_address) == entries


def test_a_file_without_the_0x_prefix_still_verifies(alice: Keypair) -> None:
    wrapper = json.loads(sign_verdict_file(VECTOR, alice))
    wrapper["signature"] = wrapper["signature"][2:]
    assert read_verdict_file(json.dumps(wrapper).encode(), alice.ss58_address) == VECTOR


def test_signing_refuses_what_is_not_a_list_of_objects(alice: Keypair) -> None:
    with pytest.raises(StorageError, match="verdict #1"):
        sign_verdict_file([{"hotkey": "a"}, "b"], alice)  # type: ignore[list-item]


# ---- strict reading: each case the seed accepted or crashed on -------------------------------


def _signed(alice: Keypair, **changes: Any) -> bytes:
    wrapper = json.loads(sign_verdict_file(VECTOR, alice))
    for name, value in changes.items():
        if value is _DROP:
            del wrapper[name]
        else:
            wrapper[name] = value
    return json.dumps(wrapper).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"signature": _DROP}, "unsigned"),
        ({"signature": ""}, "unsigned"),
        ({"signature": "   "}, "unsigned"),
        ({"signature": None}, "unsigned"),
        ({"signature": 12345}, "unsigned"),
        ({"signature": "0xnot-hex-at-all"}, "not hex"),
        ({"signature": "0xabc"}, "not hex"),
        ({"signature": "0x" + "00" * 32}, "32 bytes"),
        ({"signature": "0x" + "00" * 64}, "does not match"),
    ],
)
def test_bad_signatures_are_rejected(alice: Keypair, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        read_verdict_file(_signed(alice, **changes), alice.ss58_address)


def test_wrong_signer_is_rejected(alice: Keypair, bob: Keypair) -> None:
    with pytest.raises(SignatureError, match="does not match"):
        read_verdict_file(sign_verdict_file(VECTOR, alice), bob.ss58_address)


@pytest.mark.parametrize("address", ["", "5Foo", "not an address at all", "x" * 48])
def test_bad_signer_address_is_rejected(alice: Keypair, address: str) -> None:
    with pytest.raises(SignatureError, match="address"):
        read_verdict_file(sign_verdict_file(VECTOR, alice), address)


def test_tampered_data_is_rejected(alice: Keypair) -> None:
    tampered = [dict(VECTOR[0]), {**VECTOR[1], "passed": True, "status": "passed"}]
    with pytest.raises(SignatureError, match="does not match"):
        read_verdict_file(_signed(alice, data=tampered), alice.ss58_address)
    with pytest.raises(SignatureError, match="does not match"):
        read_verdict_file(_signed(alice, data=VECTOR[:1]), alice.ss58_address)


def test_signature_over_other_data_is_rejected(alice: Keypair) -> None:
    other = json.loads(sign_verdict_file([{"hotkey": "5MinerC", "passed": True}], alice))["signature"]
    with pytest.raises(SignatureError, match="does not match"):
        read_verdict_file(_signed(alice, signature=other), alice.ss58_address)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"signature": "0x00", "data": [{"score": NaN}]}', "not JSON"),
        (b'{"signature": "0x00", "data": [{"score": Infinity}]}', "not JSON"),
        (b"[]", "not an object"),
        (b'"just a string"', "not an object"),
        (b'{"signature": "0x00", "data": {"hotkey": "5MinerA"}}', "not a list"),
        (b'{"signature": "0x00", "data": [1, 2]}', "verdict #0"),
    ],
)
def test_malformed_files_are_rejected(alice: Keypair, raw: bytes, reason: str) -> None:
    with pytest.raises(StorageError, match=reason):
        read_verdict_file(raw, alice.ss58_address)


def test_an_empty_signed_list_is_valid(alice: Keypair) -> None:
    assert read_verdict_file(sign_verdict_file([], alice), alice.ss58_address) == []


@pytest.mark.parametrize("data", ["absent", None, [], {}, ""])
def test_a_signed_file_with_no_data_is_empty_as_in_the_seed(alice: Keypair, data: object) -> None:
    """The seed reads `wrapper["data"] or []`: no data is an empty file, signed over `[]`."""
    signature = json.loads(sign_verdict_file([], alice))["signature"]
    wrapper: dict[str, object] = {"signature": signature}
    if data != "absent":
        wrapper["data"] = data
    assert read_verdict_file(json.dumps(wrapper).encode(), alice.ss58_address) == []
    unsigned = {k: v for k, v in wrapper.items() if k != "signature"}
    with pytest.raises(SignatureError, match="unsigned"):
        read_verdict_file(json.dumps(unsigned).encode(), alice.ss58_address)
    other = json.loads(sign_verdict_file([{"hotkey": "5MinerA"}], alice))["signature"]
    with pytest.raises(SignatureError, match="does not match"):
        read_verdict_file(json.dumps({**wrapper, "signature": other}).encode(), alice.ss58_address)
