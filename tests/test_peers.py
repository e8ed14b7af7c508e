"""PEER_VALIDATORS: the seed's shape and rules, but every bad field is reported, not dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leoma.adapters.directory import DirectoryStore
from leoma.adapters.s3 import S3Store
from leoma.errors import ConfigError
from leoma.mirror.peers import PeerEntry, parse_peers, peer_store, peers_from_env

A = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
B = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def entry(hotkey: str = A, **over: object) -> dict[str, object]:
    base: dict[str, object] = {"hotkey": hotkey, "uid": 3, "bucket": "leoma-val-3",
                               "endpoint": "https://acct.r2.cloudflarestorage.com",
                               "read_access_key": "AK", "read_secret_key": "SK"}
    base.update(over)
    return base


def test_a_seed_entry_parses_with_region_defaulting_to_auto() -> None:
    [peer], problems = parse_peers(json.dumps([entry()]))
    assert problems == []
    assert peer == PeerEntry(hotkey=A, uid=3, bucket="leoma-val-3", endpoint="https://acct.r2.cloudflarestorage.com",
                             region="auto", read_access_key="AK", read_secret_key="SK")


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_means_no_peers(text: str | None) -> None:
    assert parse_peers(text) == ([], [])


@pytest.mark.parametrize(("value", "index", "field", "words"), [
    ("{not json", -1, "", "not valid JSON"),
    ('{"hotkey": "x"}', -1, "", "JSON list"),
    ('["text"]', 0, "", "must be an object"),
    (json.dumps([entry(bucket="")]), 0, "bucket", "missing"),
    (json.dumps([entry(endpoint=None)]), 0, "endpoint", "missing"),
    (json.dumps([entry(read_access_key="")]), 0, "read_access_key", "missing"),
    (json.dumps([entry(read_secret_key="")]), 0, "read_secret_key", "missing"),
    (json.dumps([entry(hotkey="")]), 0, "hotkey", "missing"),
    (json.dumps([entry(hotkey="../../etc/passwd")]), 0, "hotkey", "not an SS58"),
    (json.dumps([entry(uid="three")]), 0, "uid", "integer"),
    (json.dumps([entry(uid=-1)]), 0, "uid", "integer"),
    (json.dumps([entry(bucket=7)]), 0, "bucket", "string"),
    (json.dumps([entry(url="http://x")]), 0, "url", "file: or s3://"),
])
def test_every_bad_field_is_reported_with_index_and_field(value: str, index: int, field: str, words: str) -> None:
    peers, problems = parse_peers(value)
    assert peers == []
    assert [(p.index, p.field) for p in problems] == [(index, field)]
    assert words in problems[0].message
    assert "PEER_VALIDATORS" in str(problems[0])


def test_bad_entries_do_not_stop_good_ones_and_all_problems_are_listed() -> None:
    value = json.dumps([entry(bucket=""), entry(B), 5, entry(hotkey="short", read_secret_key="")])
    peers, problems = parse_peers(value)
    assert [p.hotkey for p in peers] == [B]
    assert sorted((p.index, p.field) for p in problems) == [(0, "bucket"), (2, ""), (3, "hotkey"), (3, "read_secret_key")]


def test_a_later_duplicate_replaces_the_earlier_and_is_reported() -> None:
    peers, problems = parse_peers(json.dumps([entry(bucket="one"), entry(bucket="two")]))
    assert [p.bucket for p in peers] == ["two"]
    assert [(p.index, p.field) for p in problems] == [(1, "hotkey")]


def test_a_url_entry_needs_no_bucket_fields(tmp_path: Path) -> None:
    [peer], problems = parse_peers(json.dumps([{"hotkey": A, "url": (tmp_path / "b").as_uri()}]))
    assert problems == []
    store = peer_store(peer)
    assert isinstance(store, DirectoryStore) and store.root == (tmp_path / "b").resolve()


def test_s3_entries_build_s3_stores_and_hide_their_keys() -> None:
    [peer] = parse_peers(json.dumps([entry(endpoint="acct.r2.cloudflarestorage.com/")]))[0]
    store = peer_store(peer)
    assert isinstance(store, S3Store)
    assert store.endpoint_url == "https://acct.r2.cloudflarestorage.com"  # the seed's bare host means TLS
    assert (store.bucket, store.region) == ("leoma-val-3", "auto")
    assert "SK" not in repr(peer) and "AK" not in repr(peer) and "SK" not in repr(store)
    [via_url] = parse_peers(json.dumps([{"hotkey": A, "url": "s3://b-1?endpoint=http://127.0.0.1:9",
                                         "read_access_key": "AK", "read_secret_key": "SK"}]))[0]
    s3 = peer_store(via_url, env={})
    assert isinstance(s3, S3Store) and s3.bucket == "b-1"


def test_peers_from_env_leaves_out_self_and_can_be_strict() -> None:
    text = json.dumps([entry(A), entry(B), entry(bucket="")])
    peers, problems = peers_from_env(own=A, env={"PEER_VALIDATORS": text})
    assert [p.hotkey for p in peers] == [B] and [(p.index, p.field) for p in problems] == [(2, "bucket")]
    with pytest.raises(ConfigError, match=r"PEER_VALIDATORS\[2\].bucket"):
        peers_from_env(text, strict=True)
