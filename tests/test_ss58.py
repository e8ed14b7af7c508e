"""SS58 addresses are checked by the SDK's decoder, checksum included, everywhere one is read."""

from __future__ import annotations

import json

import pytest

from leoma.adapters.signing import SS58_SHAPE, is_ss58
from leoma.api.auth import is_ss58 as auth_is_ss58
from leoma.mirror.peers import parse_peers

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def _typo(address: str) -> str:
    """The same address with its last character changed: same shape, broken checksum."""
    last = "Z" if address[-1] != "Z" else "Y"
    return address[:-1] + last


@pytest.mark.parametrize("address", [ALICE, BOB])
def test_real_addresses_pass(address: str) -> None:
    assert is_ss58(address)


@pytest.mark.parametrize("address", [_typo(ALICE), _typo(BOB), ALICE[:10] + "x" + ALICE[11:]])
def test_a_bad_checksum_passes_the_old_regex_but_is_refused(address: str) -> None:
    assert SS58_SHAPE.match(address), "the seed's regex accepts this address; the checksum must not"
    assert not is_ss58(address)
    assert not auth_is_ss58(address)


@pytest.mark.parametrize("value", ["", "5Foo", "x" * 48, "0x" + "ab" * 32, None, 42, ALICE + "1"])
def test_wrong_shapes_are_refused(value: object) -> None:
    assert not is_ss58(value)


def test_peers_refuse_a_hotkey_with_a_bad_checksum() -> None:
    entry = {"hotkey": _typo(ALICE), "uid": 3, "bucket": "b", "endpoint": "https://e",
             "read_access_key": "AK", "read_secret_key": "SK"}
    peers, problems = parse_peers(json.dumps([entry]))
    assert peers == []
    assert [(p.field, "not an SS58" in p.message) for p in problems] == [("hotkey", True)]
