"""Events: canonical bytes, hashing, validation, upcasting and the fixture of every version."""

from __future__ import annotations

import pathlib
import typing

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from leoma.errors import EventError, UnknownKind
from leoma.log import events as ev

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
ints = st.integers(min_value=-(2**53), max_value=2**53)


def _struct(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: st.from_type(hints[f.name]) for f in msgspec.structs.fields(cls)})


def bodies() -> st.SearchStrategy[ev.Body]:
    """Every kind, with arbitrary field values of the right types."""
    st.register_type_strategy(str, text)
    st.register_type_strategy(int, ints)
    for part in (ev.CheckOutcome, ev.FrontierEntry, ev.ValidatorRate, ev.MinerAggregate, ev.WeightEntry, ev.MinerChecked):
        st.register_type_strategy(part, st.deferred(lambda part=part: _struct(part)))
    return st.one_of([_struct(t) for t in ev.KINDS.values()])


def test_every_kind_the_design_names_exists() -> None:
    expected = {
        "chain_head_observed", "metagraph_observed", "commitment_observed", "allowlist_verified",
        "allowlist_rejected", "miner_checked", "task_opened", "miner_responded", "verdict_recorded",
        "task_closed", "peer_segment_imported", "peer_segment_rejected", "epoch_scored",
        "weights_submitted", "weights_confirmed", "weights_refused", "conflict_recorded",
    }
    assert expected <= set(ev.KINDS)


def test_no_body_holds_a_float() -> None:
    """Scores and rates are integers or exact fractions: replay must be bit-exact."""

    def floats(t: object) -> bool:
        info = msgspec.inspect.type_info(t)  # type: ignore[arg-type]
        seen: list[object] = []

        def walk(i: object) -> bool:
            if isinstance(i, msgspec.inspect.FloatType):
                return True
            if isinstance(i, msgspec.inspect.StructType):
                if i.cls in seen:
                    return False
                seen.append(i.cls)
                return any(walk(f.type) for f in i.fields)
            for attr in ("item_type", "value_type", "key_type"):
                if hasattr(i, attr) and walk(getattr(i, attr)):
                    return True
            if hasattr(i, "types"):
                return any(walk(x) for x in i.types)
            if hasattr(i, "item_types"):
                return any(walk(x) for x in i.item_types)
            return False

        return walk(info)

    assert [k for k, t in ev.KINDS.items() if floats(t)] == []


@settings(max_examples=200, deadline=None)
@given(bodies())
def test_encode_decode_is_the_identity(body: ev.Body) -> None:
    data = ev.encode_body(body)
    assert ev.decode_body(data) == body
    event = ev.seal(origin="5Origin", origin_seq=1, key="k", block=1, body=body, prev=ev.ZERO_HASH)
    again = ev.decode_event(ev.encode_event(event))
    assert again == event
    assert again.payload() == body
    ev.verify_event(again)


@settings(max_examples=100, deadline=None)
@given(bodies(), st.data())
def test_any_edited_byte_breaks_the_hash(body: ev.Body, data: st.DataObject) -> None:
    event = ev.seal(origin="5Origin", origin_seq=3, key="k/1", block=9, body=body, prev="ab" * 32)
    line = bytearray(ev.encode_event(event))
    start = line.index(b'"body":')
    end = line.index(b',"prev":')
    i = data.draw(st.integers(min_value=start + 8, max_value=end - 1))
    line[i] = (line[i] + 1) % 128 or 1
    try:
        edited = ev.decode_event(bytes(line))
    except EventError:
        return  # no longer parses: refused as well
    with pytest.raises(EventError):
        ev.verify_event(edited)


def test_canonical_bytes_do_not_depend_on_dict_order() -> None:
    a = ev.VerdictRecorded(task_id=1, miner="m", passed=True, overall=80, aspects={"b": 1, "a": 2},
                           judge_model="j", prompt_version="p")
    b = ev.VerdictRecorded(task_id=1, miner="m", passed=True, overall=80, aspects={"a": 2, "b": 1},
                           judge_model="j", prompt_version="p")
    assert ev.encode_body(a) == ev.encode_body(b)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 80.5, "80"])
def test_nan_infinity_and_wrong_types_are_refused(bad: object) -> None:
    body = ev.VerdictRecorded(task_id=1, miner="m", passed=True, overall=bad, judge_model="j", prompt_version="p")  # type: ignore[arg-type]
    with pytest.raises(EventError, match="overall"):
        ev.encode_body(body)


def test_oversized_body_is_refused() -> None:
    body = ev.JudgeFailed(task_id=1, miner="m", judge_model="j", prompt_version="p", attempts=3,
                          reason="x" * (ev.MAX_BODY_BYTES + 1))
    with pytest.raises(EventError, match="limit"):
        ev.encode_body(body)


def test_unknown_kind_names_itself() -> None:
    with pytest.raises(UnknownKind, match="hologram_observed"):
        ev.decode_body(b'{"kind":"hologram_observed","x":1}')


def test_newer_version_than_known_is_refused() -> None:
    data = ev.encode_body(ev.ChainHeadObserved(block_hash="ab"))
    with pytest.raises(UnknownKind, match="newer"):
        ev.decode_body(data, v=99)


def test_added_field_with_default_keeps_old_bytes() -> None:
    """omit_defaults: a new defaulted field does not change the bytes of events made before it."""
    old = ev.encode_body(ev.TaskClosed(task_id=4))
    assert old == b'{"kind":"task_closed","task_id":4}'


def test_upcaster_turns_an_old_version_into_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend task_closed is at v2, where v1 called `evaluated` `count`.
    monkeypatch.setitem(ev.VERSIONS, "task_closed", 2)
    monkeypatch.setattr(ev, "_UPCASTERS", {})

    def v1_to_v2(raw: dict) -> dict:
        raw = dict(raw)
        raw["evaluated"] = raw.pop("count")
        return raw

    ev.register_upcaster("task_closed", 1, v1_to_v2)
    body = ev.decode_body(b'{"kind":"task_closed","task_id":4,"count":7}', v=1)
    assert body == ev.TaskClosed(task_id=4, evaluated=7)


def test_missing_upcaster_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ev.VERSIONS, "task_closed", 2)
    monkeypatch.setattr(ev, "_UPCASTERS", {})
    with pytest.raises(EventError, match="no upcaster for task_closed v1"):
        ev.decode_body(b'{"kind":"task_closed","task_id":4}', v=1)


def test_fixture_of_every_v1_event_still_decodes_and_verifies() -> None:
    """Stored bytes are never rewritten: every version's fixture must keep decoding and verifying."""
    seen = set()
    for fixture in sorted(FIXTURES.glob("events_v*.jsonl")):
        prev = ev.ZERO_HASH
        for line in fixture.read_bytes().splitlines():
            event = ev.decode_event(line)
            assert event.prev == prev
            ev.verify_event(event)
            event.payload()
            seen.add(event.kind)
            prev = event.hash
    assert seen == set(ev.KINDS), f"add an example of {sorted(set(ev.KINDS) - seen)} to the fixture"


def test_verify_chain_names_gaps_and_broken_links() -> None:
    body = ev.TaskClosed(task_id=1)
    e1 = ev.seal(origin="o", origin_seq=1, key="a", block=1, body=body, prev=ev.ZERO_HASH)
    e2 = ev.seal(origin="o", origin_seq=2, key="b", block=1, body=body, prev=e1.hash)
    e3 = ev.seal(origin="o", origin_seq=3, key="c", block=1, body=body, prev=e2.hash)
    assert ev.verify_chain([e1, e2, e3]) == e3.hash
    with pytest.raises(EventError, match="gap or reorder"):
        ev.verify_chain([e1, e3])
    with pytest.raises(EventError, match="gap or reorder"):
        ev.verify_chain([e2, e1])


@pytest.mark.parametrize("key", ["", "a\nb", "x" * 600])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(EventError, match="key"):
        ev.seal(origin="o", origin_seq=1, key=key, block=1, body=ev.TaskClosed(task_id=1), prev=ev.ZERO_HASH)


def test_decode_event_refuses_garbage() -> None:
    with pytest.raises(EventError, match="not a Leoma event"):
        ev.decode_event(b"{not json")
