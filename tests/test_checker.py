"""The miner checker over the simulated chain and the local world: the seed's checks, order and
reasons; events only when something changed; one bad miner never stops the pass."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from leoma.mirror.allowlist import ALLOWLIST_KEY
from leoma.adapters.chain import commitment_payload
from leoma.log.events import MinerChecked, decode_body
from leoma.services.checker import check_miners
from tests.validator_fixtures import OwnerApi, ValidatorWorld, owner_api, vworld  # noqa: F401


def by_name(vw: ValidatorWorld, results: list[MinerChecked]) -> dict[str, MinerChecked]:
    return {vw.name_of(r.hotkey): r for r in results}


def kinds(ctx) -> dict[str, int]:
    return ctx.log.counts_by_kind()


async def test_every_reference_miner_gets_the_seeds_verdict(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    async with vworld.context(v) as ctx:
        results = by_name(vworld, await check_miners(ctx))
    for name in ("faithful", "static", "noisy", "wrong_resolution", "slow", "flaky", "garbage", "reject"):
        r = results[name]
        assert r.valid and r.invalid_reason == "" and r.chute_hot and r.model_hash, name
        assert [c.name for c in r.checks] == ["blacklist", "commit_count", "fields", "chute_fetched", "chute_hot",
                                              "chute_revision", "hf_hash", "hf_revision"]
        assert r.uid == vworld.uids[name] and r.commit_block > 0
    assert results["cold"].invalid_reason == "chute_not_running" and not results["cold"].valid
    assert results["copycat"].invalid_reason == f"duplicate_model:earliest_uid={vworld.uids['faithful']}"
    assert results["copycat"].model_hash == results["faithful"].model_hash
    # The owner's allowlist anchor is a plain commitment, not a model: it is not checked as a miner.
    assert vworld.owner.ss58_address not in results


async def test_events_only_when_something_changed(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    async with vworld.context(v) as ctx:
        results = await check_miners(ctx)
        first = kinds(ctx)
        assert first["metagraph_observed"] == 1 and first["allowlist_verified"] == 1
        assert first["commitment_observed"] == len(results) == 10
        assert first["miner_checked"] == 2 * len(results)  # the change + this epoch's heartbeat
        await check_miners(ctx)
        assert kinds(ctx) == first  # same block, same results: nothing new
        head = vworld.sim.head()
        vworld.sim.advance_to((head // ctx.consensus.epoch.length + 1) * ctx.consensus.epoch.length)
        await check_miners(ctx)
        beats = [decode_body(r.body) for r in ctx.log.rows(kinds=["miner_checked"])]
        assert kinds(ctx)["miner_checked"] == 3 * len(results)  # one heartbeat more each, no change
        assert sum(b.heartbeat for b in beats) == 2 * len(results)
        assert kinds(ctx)["metagraph_observed"] == 1
    # the faithful miner's chute goes cold: exactly its result changes (a new client: no cached info)
    vworld.world.miners["faithful"] = msgspec.structs.replace(vworld.world.miners["faithful"], behaviour="cold")
    async with vworld.context(v) as ctx:
        before = kinds(ctx)["miner_checked"]
        results = by_name(vworld, await check_miners(ctx))
        assert results["faithful"].invalid_reason == "chute_not_running"
        assert results["copycat"].valid  # the earliest holder of the weights is gone
        assert kinds(ctx)["miner_checked"] == before + 2
        latest = {}
        for row in ctx.log.rows(kinds=["miner_checked"], origin=ctx.hotkey):
            body = decode_body(row.body)
            latest[body.hotkey] = (row.key, body)
        key, body = latest[vworld.hotkey("faithful")]
        assert key.startswith(f"checked/{vworld.hotkey('faithful')}/") and body.invalid_reason == "chute_not_running"


async def test_malformed_commitment_is_invalid_and_the_others_are_still_checked(vworld: ValidatorWorld) -> None:
    await vworld.commit("static", json.dumps({"model_name": 12345, "model_revision": "x", "chute_id": "y"}))
    await vworld.commit("noisy", "this is not json")
    async with vworld.context(vworld.validators[0]) as ctx:
        results = by_name(vworld, await check_miners(ctx))
        assert results["static"].invalid_reason == "malformed_model_name"
        assert results["noisy"].invalid_reason == "missing_model_name"
        assert results["faithful"].valid and results["flaky"].valid
        observed = [decode_body(r.body) for r in ctx.log.rows(kinds=["commitment_observed"])]
        static = [o for o in observed if o.hotkey == vworld.hotkey("static")]
        assert static[-1].commit_count == 2 and "12345" in static[-1].data


@pytest.mark.parametrize("case, reason", [
    ("third_commit", "max_commits_exceeded_2"),
    ("wrong_prefix", "model_name_must_start_with_leoma"),
    ("not_my_hotkey", "model_name_must_end_with_hotkey"),
    ("unknown_chute", "chute_fetch_failed"),
    ("chute_revision", "revision_mismatch:chute="),
    ("not_on_hf", "hf_model_fetch_failed"),
])
async def test_each_check_gives_the_seeds_reason(vworld: ValidatorWorld, case: str, reason: str) -> None:
    m = vworld.world.miners["static"]
    hk = vworld.hotkey("static").lower()
    text = {
        "third_commit": commitment_payload(m.repo_id, m.revision, m.chute_id),
        "wrong_prefix": commitment_payload(f"devnet/video-{hk}", m.revision, m.chute_id),
        "not_my_hotkey": commitment_payload("devnet/leoma-someone-else", m.revision, m.chute_id),
        "unknown_chute": commitment_payload(m.repo_id, m.revision, "no-such-chute"),
        "chute_revision": commitment_payload(m.repo_id, "a" * 40, m.chute_id),
        "not_on_hf": commitment_payload(f"devnet/leoma-gone-{hk}", m.revision, m.chute_id),
    }[case]
    await vworld.commit("static", text)
    if case == "third_commit":
        await vworld.commit("static", text)
    async with vworld.context(vworld.validators[0]) as ctx:
        results = by_name(vworld, await check_miners(ctx))
    assert results["static"].invalid_reason.startswith(reason)
    assert not results["static"].valid and results["faithful"].valid
    if case == "chute_revision":
        assert results["static"].invalid_reason == f"revision_mismatch:chute={m.revision}"


class ExplodingHub:
    """A Hugging Face adapter that blows up for one repository (an unexpected bug, not an API error)."""

    def __init__(self, inner, repo: str) -> None:
        self.inner, self.repo = inner, repo

    async def model_hash(self, repo_id: str, revision: str):
        if repo_id == self.repo:
            raise RuntimeError("unexpected bug")
        return await self.inner.model_hash(repo_id, revision)


async def test_an_exception_in_one_check_does_not_stop_the_pass(vworld: ValidatorWorld) -> None:
    from leoma.adapters.hub import HubClient

    hub = ExplodingHub(HubClient(vworld.world.url), vworld.world.miners["noisy"].repo_id)
    async with vworld.context(vworld.validators[0], hub=hub) as ctx:
        results = by_name(vworld, await check_miners(ctx))
    assert results["noisy"].invalid_reason == "check_error:RuntimeError"
    assert results["faithful"].valid and results["static"].valid


async def test_blacklist_from_the_owner_api(vworld: ValidatorWorld, owner_api: OwnerApi) -> None:
    owner_api.blacklist = [vworld.hotkey("faithful")]
    v = vworld.validators[0]
    async with vworld.context(v, settings=vworld.settings(v, API_URL=owner_api.url)) as ctx:
        results = by_name(vworld, await check_miners(ctx))
    assert results["faithful"].invalid_reason == "blacklisted"
    assert [c.name for c in results["faithful"].checks] == ["blacklist"]
    assert results["copycat"].valid  # faithful is out, so the copy is the earliest holder now
    reports = owner_api.posted("/miners/report")
    assert len(reports) == 1
    entries = {e["miner_hotkey"]: e for e in json.loads(reports[0][1])["miners"]}
    assert entries[vworld.hotkey("faithful")]["invalid_reason"] == "blacklisted"
    assert entries[vworld.hotkey("faithful")]["block"] is not None
    cold = entries[vworld.hotkey("cold")]
    assert cold["model_hash"] is None and cold["chute_slug"] == "devnet-cold" and cold["is_valid"] is False


async def test_blacklist_failure_fails_open_and_says_why(vworld: ValidatorWorld, owner_api: OwnerApi,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    owner_api.fail = True
    v = vworld.validators[0]
    with caplog.at_level(logging.WARNING, logger="leoma"):
        async with vworld.context(v, settings=vworld.settings(v, API_URL=owner_api.url)) as ctx:
            results = by_name(vworld, await check_miners(ctx))
    assert results["faithful"].valid
    assert any("blacklist unavailable" in r.getMessage() for r in caplog.records)
    assert any("/miners/report refused: HTTP 500" in r.getMessage() for r in caplog.records)


async def test_tampered_allowlist_is_recorded_as_rejected(vworld: ValidatorWorld) -> None:
    async with vworld.context(vworld.validators[0]) as ctx:
        await check_miners(ctx)
        await vworld.source.put(ALLOWLIST_KEY, b'{"interval":1,"validators":["5Evil"],"version":1}')
        vworld.sim.step(1)
        await check_miners(ctx)
        rejected = [decode_body(r.body) for r in ctx.log.rows(kinds=["allowlist_rejected"])]
        assert len(rejected) == 1 and rejected[0].reason.startswith("hash_mismatch")
        vworld.sim.step(1)
        await check_miners(ctx)  # still tampered: no new event
        assert ctx.log.count(kind="allowlist_rejected") == 1 and ctx.log.count(kind="allowlist_verified") == 1


async def test_check_miners_command_prints_every_miner(vworld: ValidatorWorld) -> None:
    import asyncio

    from click.testing import CliRunner

    from leoma_cmd.main import cli
    from leoma_cmd.validator_cmds import register

    if "check-miners" not in cli.commands:
        register(cli)
    env = vworld.env(vworld.validators[0])
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["check-miners", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = {vworld.name_of(r["hotkey"]): r for r in json.loads(result.output)}
    assert rows["faithful"]["valid"] and rows["cold"]["invalid_reason"] == "chute_not_running"
    table = await asyncio.to_thread(CliRunner().invoke, cli, ["check-miners"], env=env)
    assert table.exit_code == 0 and "duplicate_model:earliest_uid=" in table.output


# -- untrusted text (issue 18) ---------------------------------------------------------------

SURROGATE_COMMITMENT = '{"model_name": "user/leoma-\\ud800abc", "model_revision": "r", "chute_id": "c"}'


async def test_a_lone_surrogate_commitment_is_invalid_and_the_pass_is_recorded(vworld: ValidatorWorld) -> None:
    assert SURROGATE_COMMITMENT.isascii()  # what the chain holds: pure ASCII, valid JSON
    await vworld.commit("static", SURROGATE_COMMITMENT)
    async with vworld.context(vworld.validators[0]) as ctx:
        results = by_name(vworld, await check_miners(ctx))
        assert results["static"].invalid_reason == "invalid_text:model_name"
        assert "\\ud800" in results["static"].model_name  # shown escaped
        assert results["faithful"].valid and results["noisy"].valid
        recorded = {vworld.name_of(decode_body(r.body).hotkey) for r in ctx.log.rows(kinds=["miner_checked"])}
        assert {"static", "faithful", "noisy", "cold"} <= recorded


def test_commitment_strings_never_stop_the_pass(tmp_path) -> None:
    """Any commitment text (any JSON, any unicode escape): that miner is invalid with a reason,
    the others are checked and everything is recorded."""
    import asyncio

    from hypothesis import HealthCheck, given, settings, strategies as st

    from leoma.adapters.chain import Chain
    from leoma.adapters.signing import keypair_from_uri
    from tests.validator_fixtures import NETUID, build_validator_world, wallet

    loop = asyncio.new_event_loop()
    vw = loop.run_until_complete(build_validator_world(tmp_path, behaviours=("faithful", "static")))
    counter = iter(range(10**6))
    anything = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
    value = st.one_of(anything, st.integers(), st.none(), st.lists(anything, max_size=2))
    commitment = st.one_of(
        st.text(max_size=200),  # raw text a chain may carry (valid UTF-8)
        st.fixed_dictionaries({"model_name": value, "model_revision": value, "chute_id": value},
                              optional={"extra": value}).map(json.dumps),  # escapes: pure ASCII
        st.builds(lambda s, t: json.dumps({"model_name": s, "model_revision": t, "chute_id": "x"}, ensure_ascii=False),
                  st.text(max_size=30), st.text(max_size=30)),
    )

    async def scenario(text: str) -> None:
        kp = keypair_from_uri(f"//hypothesis-{next(counter)}")
        vw.sim.register(kp.ss58_address)
        async with Chain(vw.network) as chain:
            reveal = await chain.set_timelocked_commitment(wallet(kp), NETUID, text)
        vw.sim.advance_to(reveal)
        async with vw.context(vw.validators[0]) as ctx:
            results = {r.hotkey: r for r in await check_miners(ctx)}
            mine = results[kp.ss58_address]
            assert not mine.valid and mine.invalid_reason
            parsed = {}
            try:
                parsed = json.loads(text)
            except ValueError:
                pass
            if isinstance(parsed, dict):
                bad = [k for k in ("model_name", "model_revision", "chute_id")
                       if isinstance(parsed.get(k), str) and any(0xD800 <= ord(c) <= 0xDFFF for c in parsed[k])]
                if bad:
                    assert mine.invalid_reason == f"invalid_text:{bad[0]}"
            assert results[vw.hotkey("faithful")].valid and results[vw.hotkey("static")].valid
            latest = {}
            for row in ctx.log.rows(kinds=["miner_checked"]):
                body = decode_body(row.body)
                latest[body.hotkey] = body
            assert latest[kp.ss58_address].invalid_reason == mine.invalid_reason

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(commitment)
    def run(text: str) -> None:
        loop.run_until_complete(scenario(text))

    try:
        run()
    finally:
        loop.run_until_complete(vw.stop())
        loop.close()
