"""Commitment rules, duplicates and the own miner view (seed-spec §2.4, §10, fix §12.13)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from leoma.log.events import MinerChecked
from projections.miners import (
    MinersView,
    commit_count_problem,
    commitment_problem,
    duplicates,
    parse_commitment,
)
from tests.builders import LogBuilder

OWN = "val-A"


def commit(name: object = "user/leoma-video", rev: object = "abc", chute: object = "c1") -> dict:
    return {"model_name": name, "model_revision": rev, "chute_id": chute}


def test_parse_valid_commitment_keeps_extra_fields() -> None:
    text = json.dumps({"model_name": "u/leoma-x", "model_revision": "r", "chute_id": "c", "extra": {"n": 1}})
    assert parse_commitment(text)["extra"] == {"n": 1}


@pytest.mark.parametrize("text", ["plain", "", None, "{not json", "[1, 2]", "3", "{}", "true", "   ", '"str"'])
def test_parse_garbage_is_empty(text: str | None) -> None:
    assert parse_commitment(text) == {}


@pytest.mark.parametrize(
    ("parsed", "reason"),
    [
        ({}, "missing_model_name"),
        (commit(name=""), "missing_model_name"),
        (commit(rev=None), "missing_model_revision"),
        ({"model_name": "u/leoma-x", "model_revision": 0, "chute_id": "c"}, "missing_model_revision"),
        (commit(chute=""), "missing_chute_id"),
        (commit(name="user/model"), "model_name_must_start_with_leoma"),
    ],
)
def test_field_rules(parsed: dict, reason: str) -> None:
    assert commitment_problem(parsed) == reason


@pytest.mark.parametrize(
    "name", ["your_username/leoma-video-model", "org/leoma-video", "user/LEOMA-transformers", "a/Leoma-my-model"]
)
def test_valid_names(name: str) -> None:
    assert commitment_problem(commit(name=name)) is None


def test_name_must_end_with_hotkey_case_insensitively() -> None:
    hotkey = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
    assert commitment_problem(commit(name="user/leoma-video-model"), hotkey) == "model_name_must_end_with_hotkey"
    assert commitment_problem(commit(name=f"your_username/leoma-hh-{hotkey}"), hotkey) is None
    assert commitment_problem(commit(name=f"your_username/leoma-hh-{hotkey}".upper()), hotkey) is None
    assert commitment_problem(commit(name="leoma-abc5XYZ"), "5xyz") is None


@pytest.mark.parametrize(
    ("parsed", "reason"),
    [
        (commit(name=123), "malformed_model_name"),
        (commit(name=["leoma"]), "malformed_model_name"),
        (commit(name={"a": 1}), "malformed_model_name"),
        (commit(name=float("nan")), "malformed_model_name"),
        (parse_commitment('{"model_name": NaN, "model_revision": "r", "chute_id": "c"}'), "malformed_model_name"),
    ],
)
def test_fix_malformed_commitment_does_not_stop_the_pass(parsed: dict, reason: str) -> None:
    assert commitment_problem(parsed, "5abc") == reason


@pytest.mark.parametrize("parsed", [commit(rev=1.5), commit(rev=7), commit(chute=True), commit(chute=["c"]),
                                    commit(rev={"sha": "x"}, chute=12)])
def test_truthy_non_string_revision_or_chute_id_is_left_to_the_checks_as_in_the_seed(parsed: dict) -> None:
    """The seed only asked revision and chute id to be truthy; Hugging Face and Chutes then decide."""
    assert commitment_problem(parsed) is None


@pytest.mark.parametrize("parsed", [commit(rev=0), commit(rev=""), commit(rev=None), commit(rev=[]), commit(chute={})])
def test_falsy_revision_or_chute_id_is_missing(parsed: dict) -> None:
    assert commitment_problem(parsed, "5abc") in ("missing_model_revision", "missing_chute_id")


def test_commit_block_zero_is_a_real_block_and_sorts_first() -> None:
    """The seed orders by `(block, hotkey)` with only a *missing* block last; block 0 is the earliest."""
    b = LogBuilder()
    b.metagraph(OWN, ["owner", "m1", "m2"], block=1)
    b.commitment(OWN, "m1", commit_block=0, block=2)
    b.commitment(OWN, "m2", commit_block=3, block=4)
    b.checked(OWN, "m1", uid=1, block=5, commit_block=0, model_hash="same")
    b.checked(OWN, "m2", uid=2, block=5, commit_block=3, model_hash="same")
    snap = MinersView.fold(b.rows(), own=OWN).snapshot()
    assert snap.commit_block == {"m1": 0, "m2": 3}
    assert snap.valid == ("m1",) and snap.reasons["m2"] == "duplicate_model:earliest_uid=1"


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8))
def test_any_json_value_gives_a_reason_or_none_never_raises(value: object) -> None:
    for field in ("model_name", "model_revision", "chute_id"):
        result = commitment_problem({**commit(), field: value}, "5abc")
        assert result is None or isinstance(result, str)


@pytest.mark.parametrize(("count", "most", "reason"), [
    (0, 2, None), (1, 2, None), (2, 2, None), (3, 2, "max_commits_exceeded_2"), (10, 2, "max_commits_exceeded_2"),
    (3, 5, None), (6, 5, "max_commits_exceeded_5"),
])
def test_commit_count(count: int, most: int, reason: str | None) -> None:
    assert commit_count_problem(count, most) == reason


def mc(hotkey: str, uid: int, block: int, h: str = "H", valid: bool = True) -> MinerChecked:
    return MinerChecked(hotkey=hotkey, uid=uid, commit_block=block, valid=valid, model_hash=h)


def test_duplicates_earliest_block_then_lowest_uid_keeps_it() -> None:
    found = duplicates([mc("late", 1, 300), mc("early", 9, 100), mc("tie", 4, 100), mc("other", 2, 50, "X"),
                        mc("invalid", 0, 1, valid=False)])
    assert found == {"early": "duplicate_model:earliest_uid=4", "late": "duplicate_model:earliest_uid=4"}


def test_view_latest_check_valid_set_and_uids() -> None:
    b = LogBuilder()
    b.metagraph(OWN, ["owner", "m1", "m2", "m3"], block=10)
    b.checked(OWN, "m1", uid=1, block=11, valid=False, reason="chute_not_running")
    b.checked(OWN, "m1", uid=1, block=20, valid=True, commit_block=5)
    b.checked(OWN, "m2", uid=2, block=20, valid=False, reason="blacklisted")
    b.checked(OWN, "gone", uid=7, block=20, valid=True)
    b.checked("val-B", "m3", uid=3, block=20, valid=True)  # another validator's view: not ours
    b.commitment(OWN, "m1", commit_block=5, block=9)
    view = MinersView.fold(b.rows(), own=OWN)
    snap = view.snapshot()
    assert snap.valid == ("m1",)
    assert snap.reason("m2") == "blacklisted"
    assert snap.reason("gone") == "not_on_metagraph"
    assert snap.reason("m3") == "not_checked"
    assert snap.uid_by_hotkey["m3"] == 3 and snap.commit_block["m1"] == 5
    assert view.latest_checks()["m1"].valid
    # As of block 15 the first (invalid) check is the latest one.
    assert view.snapshot(15).valid == ()


def test_view_new_commitment_after_check_is_not_valid_until_rechecked() -> None:
    b = LogBuilder()
    b.metagraph(OWN, ["owner", "m1"], block=10)
    b.checked(OWN, "m1", uid=1, block=20, commit_block=5)
    b.commitment(OWN, "m1", commit_block=30, block=31)
    snap = MinersView.fold(b.rows(), own=OWN).snapshot()
    assert snap.reason("m1") == "commitment_changed_since_check"


def test_view_marks_duplicates() -> None:
    b = LogBuilder()
    b.metagraph(OWN, ["owner", "m1", "m2"], block=1)
    b.checked(OWN, "m1", uid=1, block=2, commit_block=50, model_hash="same")
    b.checked(OWN, "m2", uid=2, block=2, commit_block=40, model_hash="same")
    snap = MinersView.fold(b.rows(), own=OWN).snapshot()
    assert snap.valid == ("m2",)
    assert snap.reason("m1") == "duplicate_model:earliest_uid=2"
