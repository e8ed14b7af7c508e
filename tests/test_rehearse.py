"""`leoma rehearse` on a small subnet: a full turn and an epoch, on a scratch log and a scratch prefix,
with nothing submitted to the chain and nothing written where the validator's real state lives."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from leoma.adapters.directory import DirectoryStore
from leoma.devnet.config import consensus_toml
from leoma.log import decisions
from leoma.log.eventlog import EventLog
from leoma.tools.rehearse import PrefixStore
from tests.validator_fixtures import build_validator_world


async def test_prefix_store_keeps_every_key_under_its_prefix(tmp_path: Path) -> None:
    inner = DirectoryStore(tmp_path / "b")
    store = PrefixStore(inner, "rehearse/x")
    await store.put("log/a.json", b"1")
    assert await inner.get("rehearse/x/log/a.json") == b"1" and await store.get("log/a.json") == b"1"
    assert [i.key async for i in store.list("log/")] == ["log/a.json"]
    head = await store.head("log/a.json")
    assert head is not None and head.key == "log/a.json"
    await store.delete("log/a.json")
    assert await inner.head("rehearse/x/log/a.json") is None


async def test_rehearse_runs_a_turn_and_an_epoch_and_submits_nothing(tmp_path: Path) -> None:
    from leoma_cmd.main import cli

    vw = await build_validator_world(tmp_path / "net", behaviours=("faithful", "static", "noisy"))
    try:
        me = vw.validators[0]
        (tmp_path / "consensus.toml").write_text(consensus_toml(vw.consensus))
        env = vw.env(me, LEOMA_CONSENSUS=str(tmp_path / "consensus.toml"))
        chain_before = vw.sim.state()
        scratch = tmp_path / "scratch"
        # The command runs its own event loop; the world keeps serving from this one.
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["rehearse", "--json", "--scratch-dir", str(scratch)],
                                         env=env)
        assert result.exit_code == 0, result.output
        r = json.loads(result.output)
        assert r["set_weights"] == "suppressed" and r["miners_checked"] == 3 and r["miners_valid"] == 3
        assert r["task_id"] is not None and r["task_evaluated"] == 3, r["task_note"]
        assert r["weights"] and not r["commit_reveal"] and r["submittable_now"]
        # Nothing reached the chain: no weights, no LastUpdate.
        after = vw.sim.state()
        assert after.weights == {} and after.last_update == chain_before.last_update
        # The scratch log holds the turn and the decision; the real log was never created.
        assert Path(r["scratch_log"]).parent == scratch and not Path(env["LEOMA_DB"]).exists()
        with EventLog(r["scratch_log"], readonly=True) as log:
            assert log.count(kind="task_closed") == 1 and log.count(kind="epoch_scored") == 1
            assert log.count(kind="weights_submitted") == 0
            found = decisions.find(log, r["epoch"], origin=me.ss58_address)
            assert found is not None
            decided = found.body
        assert [(w["uid"], w["weight"]) for w in r["weights"]] == [(w.uid, w.weight) for w in decided.weights]
        # Every object written to the own bucket is under the scratch prefix.
        bucket = Path(env["LEOMA_OWN_BUCKET_URL"].removeprefix("file://"))
        written = [p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file()]
        assert written and all(k.startswith(r["scratch_prefix"]) or k.startswith(".") for k in written), written
        assert any("/log/" in k for k in written), "the scratch log was published under the prefix"
        # The summary for people says the same.
        people = await asyncio.to_thread(CliRunner().invoke, cli, ["rehearse", "--scratch-dir", str(scratch)], env=env)
        assert people.exit_code == 0, people.output
        assert "set_weights suppressed" in people.output and "the chain would take it now" in people.output
    finally:
        await vw.stop()
