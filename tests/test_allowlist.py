"""The validator allowlist: canonical bytes, digest vector, publish and verified read."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from leoma.adapters.directory import DirectoryStore
from leoma.errors import ConfigError
from leoma.mirror.allowlist import (
    ALLOWLIST_KEY,
    COMMITMENT_PREFIX,
    AllowlistRejected,
    canonical_bytes,
    digest,
    parse_commitment,
    publish_allowlist,
    read_allowlist,
)

NETUID = 99


def test_seed_vector() -> None:
    data = canonical_bytes(["5Bbb", "5Aaa", "5Ccc"], 100)
    assert data == b'{"interval":100,"validators":["5Aaa","5Bbb","5Ccc"],"version":1}'
    assert digest(data) == "a30398e9e30337959174ecdeef64a69aa650ea01f8a88db1e8adc15e785a8517"
    assert canonical_bytes(["5Ccc", "5Aaa", "5Bbb", "5Aaa"], 100) == data  # order and duplicates do not matter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("leoma:allowlist:v1:", None),
        ("leoma:allowlist:v1:   ", None),
        ("other:abc", None),
        ("leoma:allowlist:v1: abc ", "abc"),
        ("leoma:allowlist:v1:" + "f" * 64, "f" * 64),
    ],
)
def test_parse_commitment(text: str | None, expected: str | None) -> None:
    assert parse_commitment(text) == expected


class Anchors:
    """A stand-in for the two chain reads and the one write the allowlist uses."""

    def __init__(self, owner: str | None) -> None:
        self.owner = owner
        self.plain: dict[str, str] = {}

    async def owner_hotkey(self, netuid: int) -> str | None:
        return self.owner

    async def plain_commitment(self, netuid: int, hotkey: str) -> str | None:
        return self.plain.get(hotkey)

    async def set_commitment(self, wallet: object, netuid: int, text: str) -> int:
        self.plain[wallet.hotkey.ss58_address] = text  # type: ignore[attr-defined]
        return 1


OWNER = SimpleNamespace(hotkey=SimpleNamespace(ss58_address="5Owner"))


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(str(tmp_path / "source"))


async def test_publish_then_read(store: DirectoryStore) -> None:
    anchors = Anchors("5Owner")
    value = await publish_allowlist(store, anchors, OWNER, NETUID, ["5Ccc", " 5Aaa", "", "5Aaa"], 100)
    assert anchors.plain["5Owner"] == COMMITMENT_PREFIX + value
    assert await store.get(ALLOWLIST_KEY) == canonical_bytes(["5Aaa", "5Ccc"], 100)
    allowlist = await read_allowlist(anchors, store, NETUID)
    assert allowlist.validators == ("5Aaa", "5Ccc") and allowlist.interval == 100 and allowlist.digest == value


@pytest.mark.parametrize(("validators", "interval"), [([], 100), (["  "], 100), (["5A"], 0), (["5A"], -3)])
async def test_publish_refuses_bad_input(store: DirectoryStore, validators: list[str], interval: int) -> None:
    with pytest.raises(ConfigError):
        await publish_allowlist(store, Anchors("5Owner"), OWNER, NETUID, validators, interval)


async def _anchor(store: DirectoryStore, anchors: Anchors, data: bytes, committed: bytes | None = None) -> None:
    await store.put(ALLOWLIST_KEY, data, content_type="application/json")
    anchors.plain["5Owner"] = COMMITMENT_PREFIX + digest(committed if committed is not None else data)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no_owner", "no_owner"),
        ("no_commitment", "no_commitment"),
        ("file_missing", "file_missing"),
        ("tampered", "hash_mismatch"),
        ("bad_json", "bad_json"),
        ("no_validators_key", "bad_json"),
        ("empty", "empty"),
        ("interval_zero", "bad_interval"),
        ("interval_negative", "bad_interval"),
    ],
)
async def test_read_rejects_with_a_reason(store: DirectoryStore, case: str, reason: str) -> None:
    anchors = Anchors(None if case == "no_owner" else "5Owner")
    good = canonical_bytes(["5Aaa"], 100)
    if case == "file_missing":
        anchors.plain["5Owner"] = COMMITMENT_PREFIX + digest(good)
    elif case == "tampered":
        await _anchor(store, anchors, canonical_bytes(["5Evil"], 100), committed=good)
    elif case == "bad_json":
        await _anchor(store, anchors, b"{not json")
    elif case == "no_validators_key":
        await _anchor(store, anchors, json.dumps({"interval": 100}).encode())
    elif case == "empty":
        await _anchor(store, anchors, canonical_bytes([], 100))
    elif case == "interval_zero":
        await _anchor(store, anchors, canonical_bytes(["5Aaa"], 0))
    elif case == "interval_negative":
        await _anchor(store, anchors, canonical_bytes(["5Aaa"], -1))
    with pytest.raises(AllowlistRejected) as rejected:
        await read_allowlist(anchors, store, NETUID)
    assert rejected.value.reason == reason


async def test_digest_is_compared_exactly_as_in_the_seed(store: DirectoryStore) -> None:
    """An upper-case commitment is not the digest `validator publish` writes: the seed refuses it, so do we."""
    anchors = Anchors("5Owner")
    good = canonical_bytes(["5Aaa"], 100)
    await store.put(ALLOWLIST_KEY, good, content_type="application/json")
    anchors.plain["5Owner"] = COMMITMENT_PREFIX + digest(good).upper()
    with pytest.raises(AllowlistRejected) as rejected:
        await read_allowlist(anchors, store, NETUID)
    assert rejected.value.reason == "hash_mismatch"
    anchors.plain["5Owner"] = COMMITMENT_PREFIX + digest(good)
    assert (await read_allowlist(anchors, store, NETUID)).digest == digest(good)
