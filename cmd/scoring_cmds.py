"""`leoma replay`, `leoma explain` and `leoma get-rank`: the decisions, reproducible and explained."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import click

from .events_cmds import db_option, open_existing
from .output import friendly_errors, json_option, print_json, print_table


def _pct(text: str) -> str:
    return f"{float(Fraction(text)) * 100:.1f}%"


@click.command("replay")
@click.argument("epoch", type=int, required=False)
@db_option
@click.option("--all", "every", is_flag=True, help="Replay every scored epoch in the log.")
@click.option("--origin", help="Whose decisions to replay (default: the log's own, else every origin's).")
@click.option("--from-bucket", "bucket", help="Replay a validator from its public mirror alone (URL).")
@click.option("--hotkey", help="The validator whose mirror to replay (with --from-bucket).")
@click.option("--peers", "peers_json", envvar="PEER_VALIDATORS",
              help="With --from-bucket: PEER_VALIDATORS JSON naming the buckets of the other origins it read.")
@click.option("--consensus", "consensus_path", type=click.Path(dir_okay=False), envvar="LEOMA_CONSENSUS",
              help="A consensus.toml to replay under when its digest is the decision's (default: the "
                   "consensus the log recorded with that digest; a digest whose content is nowhere stops).")
@click.option("--network", envvar="NETWORK", help="Also compare with the weights on this chain when reachable.")
@json_option
@friendly_errors
def replay_cmd(epoch: int | None, db_path: str, every: bool, origin: str | None, bucket: str | None,
               hotkey: str | None, peers_json: str | None, consensus_path: str | None, network: str | None,
               as_json: bool) -> None:
    """Re-derive EPOCH from exactly the events it was decided on, and diff.

    Exit 0 when every replayed epoch reproduces; 1 with the differences, field by field.
    """
    import tempfile

    from leoma.errors import ConfigError
    from leoma.log.consensus import consensus_for
    from leoma.tools.replay import find_epoch, recorded_epochs, replay_all

    if epoch is None and not every:
        raise click.UsageError("name an EPOCH or pass --all")
    from .mirror_cmds import network_consensus

    consensus = network_consensus(consensus_path)  # the flag, LEOMA_CONSENSUS or .env, as `leoma serve` reads it
    with tempfile.TemporaryDirectory() as tmp:
        if bucket:
            if not hotkey:
                raise click.UsageError("--from-bucket needs --hotkey: whose mirror to replay")
            import asyncio

            from leoma.mirror.peers import parse_peers
            from leoma.tools.replay import download_published

            entries, problems = parse_peers(peers_json or "")
            for problem in problems:
                click.echo(f"warning: {problem}", err=True)
            db_path = str(Path(tmp) / "mirror.db")
            asyncio.run(download_published(bucket, hotkey, db_path, peers=entries))
            origin = hotkey
        log = open_existing(db_path)
        with log:
            if origin is None and log.own:
                origin = log.own
            targets = (list(recorded_epochs(log, origin=origin, detail=False)) if every
                       else [find_epoch(log, epoch, origin=origin)])  # type: ignore[arg-type]
            if not targets:
                raise ConfigError(f"no epoch_scored events in {db_path}")
            known = _known_consensus(consensus, consensus_path, Path(db_path))
            # One pass over the log per origin, in epoch order, read in place (nothing copied);
            # each decision replays under the consensus it was stamped with: a given file or one
            # beside the log when its digest matches, else the one the log recorded; else stop.
            results = replay_all(log, targets, lambda r: consensus_for(log, r.body.consensus_digest,
                                                                       also=tuple(known.values())))
            if network:
                results = _check_anchors(log, targets, results, network, lambda r: consensus_for(
                    log, r.body.consensus_digest, also=tuple(known.values())))
    ok = all(r.reproduced for r in results)
    if as_json:
        import msgspec

        print_json({"ok": ok, "epochs": [msgspec.to_builtins(r) for r in results]})
    else:
        for r in results:
            status = "reproduced" if r.reproduced else "DIFFERS"
            click.echo(f"epoch {r.epoch} by {r.origin[:12]}… ({r.events} events): {status}")
            for d in r.differences:
                click.echo(f"  {d.field}: recorded {d.recorded!r} != replayed {d.replayed!r}")
    sys.exit(0 if ok else 1)


def _check_anchors(log, targets, results, network: str, consensus_of):  # type: ignore[no-untyped-def]
    """Anchored decisions: the anchors their makers recorded must be what the chain's
    `CommitmentOf` held at each cutoff block; a difference is reported as `anchors_on_chain`."""
    import asyncio

    import msgspec

    from leoma.adapters.chain import Chain
    from leoma.mirror import anchors
    from leoma.tools.replay import Difference

    async def go() -> list:  # type: ignore[type-arg]
        out = list(results)
        async with Chain(network) as chain:
            for i, recorded in enumerate(targets):
                consensus = consensus_of(recorded)
                if not consensus.anchors.enabled:
                    continue
                seen = [o for o in anchors.observations(log, origin=recorded.origin) if o.epoch == recorded.body.epoch]
                problems = await anchors.verify_observed(chain, recorded.body.netuid, consensus, seen[-1]) if seen else []
                if problems:
                    extra = tuple(Difference("anchors_on_chain", p, "") for p in problems)
                    out[i] = msgspec.structs.replace(out[i], differences=out[i].differences + extra)
        return out

    return asyncio.run(go())


def _known_consensus(chosen, chosen_path: str | None, db: Path) -> dict:  # type: ignore[no-untyped-def]
    """Consensus configs replay may use, by digest: the chosen one, and (unless a path was
    given) a `consensus.toml` beside the database or in its parent folder, as a devnet leaves."""
    from leoma.errors import ConfigError
    from leoma.log.consensus import load_consensus

    known = {chosen.digest: chosen}
    if chosen_path is None:
        for candidate in (db.parent / "consensus.toml", db.parent.parent / "consensus.toml"):
            if candidate.is_file():
                try:
                    found = load_consensus(candidate)
                except ConfigError:
                    continue
                known.setdefault(found.digest, found)
    return known


def _latest_decision(log, epoch: int | None, origin: str | None):  # type: ignore[no-untyped-def]
    """The named epoch's decision by key, else the newest by the kind index (never all of them).

    Read lean (`leoma.log.decisions.Recorded`): the per-validator rates stay undecoded until a
    command asks for one miner's (`decisions.aggregate`)."""
    from leoma.errors import LogError
    from leoma.log import decisions

    if epoch is not None:
        found = decisions.find(log, epoch, origin=origin, detail="lean")
        if found is None:
            raise LogError(f"no epoch_scored event for epoch {epoch} in {log.path}" + (f" by {origin}" if origin else ""))
        return found
    found = decisions.latest(log, origin=origin, detail="lean")
    if found is None:
        raise LogError(f"no scored epoch in {log.path} yet: run the validator for an epoch first")
    return found


@click.command("explain")
@click.argument("miner")
@db_option
@click.option("--epoch", type=int, help="The scored epoch to explain (default: the latest).")
@click.option("--origin", help="Whose decision (default: the log's own).")
@json_option
@friendly_errors
def explain_cmd(miner: str, db_path: str, epoch: int | None, origin: str | None, as_json: bool) -> None:
    """Why MINER ranked where it did: rates per validator, completeness, dominance comparisons."""
    from leoma.errors import LogError
    from leoma.log.consensus import consensus_for
    from projections.ranking import Standing, explain

    with open_existing(db_path) as log:
        decision = _latest_decision(log, epoch, origin or log.own)
        # The thresholds of the consensus the decision was made under, as its log recorded it.
        consensus = consensus_for(log, decision.body.consensus_digest)
        anchor_rows: list = []  # type: ignore[type-arg]
        if consensus.anchors.enabled:
            from leoma.services.anchored import explain as explain_anchors

            anchor_rows = explain_anchors(log, decision.body.epoch, origin=decision.origin)
    from leoma.log.decisions import aggregate

    body = decision.body
    aggs = {a.hotkey: a for a in body.aggregates}
    agg = aggs.get(miner) or next((a for h, a in aggs.items() if h.startswith(miner)), None)
    if agg is None:
        raise LogError(f"{miner} has no aggregate in epoch {body.epoch}: it was not sampled in the window")
    agg = aggregate(decision, agg.hotkey) or agg  # with its per-validator rates
    standings = [Standing(hotkey=a.hotkey, rate=Fraction(a.avg_rate), passed=a.passed,
                          commit_block=a.commit_block if a.commit_block >= 0 else None)
                 for a in body.aggregates if a.eligible]
    threshold = consensus.dominance_threshold
    comparisons = explain(standings, threshold, agg.hotkey) if agg.eligible else None
    data = {
        "epoch": body.epoch, "miner": agg.hotkey, "uid": agg.uid, "rank": agg.rank, "eligible": agg.eligible,
        "reason": agg.reason, "avg_rate": agg.avg_rate, "completeness": agg.completeness,
        "commit_block": agg.commit_block, "winner": body.winner,
        "rates": [{"validator": r.validator, "passed": r.passed, "evaluated": r.evaluated} for r in agg.rates],
        "dominance": _plain(comparisons),
    }
    if anchor_rows:
        data["anchors"] = anchor_rows
        data["late_tasks"] = [{"origin": t.origin, "task_id": t.task_id, "block": t.block, "anchored_at": t.anchored_at}
                              for t in body.late_tasks]
    if as_json:
        print_json(data)
        return
    if anchor_rows:
        click.echo(f"epoch {body.epoch}: decided on anchored events (cutoff block "
                   f"{consensus.anchor_cutoff(body.epoch)})")
        print_table(["validator", "anchored", "head", "anchor block", "status"],
                    [(r["validator"][:12] + "…", r["anchored_size"], (r["anchored_head"] or "-")[:12],
                      r["anchor_block"] or "-", r["status"]) for r in anchor_rows])
        for t in body.late_tasks:
            click.echo(f"task {t.task_id} by {t.origin[:12]}… (claims block {t.block}) ignored: first anchored "
                       f"at block {t.anchored_at}, after its slot + {consensus.anchor_grace} blocks")
        click.echo()
    click.echo(f"epoch {body.epoch}: {agg.hotkey} (uid {agg.uid}) rank {agg.rank or '-'}, "
               f"{'eligible' if agg.eligible else 'NOT eligible: ' + agg.reason}")
    click.echo(f"average pass rate {agg.avg_rate} ({_pct(agg.avg_rate)}), completeness {agg.completeness} "
               f"({_pct(agg.completeness)}), committed at block {agg.commit_block}")
    print_table(["validator", "passed", "evaluated", "rate"],
                [(r.validator, r.passed, r.evaluated, _pct(f"{r.passed}/{r.evaluated}") if r.evaluated else "-")
                 for r in agg.rates])
    if comparisons is not None:
        click.echo()
        if not comparisons.comparisons:
            click.echo("earliest committed eligible miner: no one before it to beat")
        for c in comparisons.comparisons:
            click.echo(f"vs {c.earlier[:12]}… (rate {_pct(str(c.earlier_rate))}): needs {_pct(str(c.needed))}, "
                       f"{'beaten' if c.beaten else 'NOT beaten'} by {_pct(str(abs(c.margin)))}")


def _plain(value):  # type: ignore[no-untyped-def]
    import msgspec

    if value is None:
        return None
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=str)
    except TypeError:
        return str(value)


@click.command("get-rank")
@db_option
@click.option("--api", "api_url", help="Read the owner-api's /scores/rank instead of the local log.")
@click.option("--origin", help="Whose decision (default: the log's own).")
@json_option
@friendly_errors
def get_rank(db_path: str, api_url: str | None, origin: str | None, as_json: bool) -> None:
    """The current ranking: the seed's columns plus eligibility and why a miner is not eligible."""
    if api_url:
        import httpx

        resp = httpx.get(api_url.rstrip("/") + "/scores/rank", timeout=30)
        resp.raise_for_status()
        data = resp.json()
        if as_json:
            print_json(data)
            return
        entries = data if isinstance(data, list) else data.get("ranks", data.get("entries", []))
        print_table(["rank", "uid", "block", "hotkey", "passed", "pass_rate", "eligible"],
                    [(e.get("rank"), e.get("uid"), e.get("block") or "—", str(e.get("miner_hotkey", ""))[:12] + "…",
                      e.get("passed_count"), e.get("pass_rate"), e.get("eligible")) for e in entries],
                    empty="No ranks yet")
        return
    with open_existing(db_path) as log:
        decision = _latest_decision(log, None, origin or log.own)
    body = decision.body
    rows = [{"rank": a.rank or None, "uid": a.uid, "block": a.commit_block if a.commit_block >= 0 else None,
             "miner_hotkey": a.hotkey, "passed_count": a.passed, "evaluated": a.evaluated,
             "pass_rate": a.avg_rate, "completeness": a.completeness, "eligible": a.eligible, "reason": a.reason}
            for a in body.aggregates]
    if as_json:
        print_json({"epoch": body.epoch, "winner": body.winner, "winner_uid": body.winner_uid,
                    "burn_reason": body.burn_reason, "ranks": rows})
        return
    click.echo(f"epoch {body.epoch}: winner {body.winner or '(burn: ' + body.burn_reason + ')'} uid {body.winner_uid}")
    print_table(["rank", "uid", "block", "hotkey", "passed", "pass_rate", "complete", "eligible"],
                [(r["rank"] or "-", r["uid"], r["block"] if r["block"] is not None else "—", r["miner_hotkey"][:12] + "…",
                  r["passed_count"], _pct(r["pass_rate"]), _pct(r["completeness"]),
                  "yes" if r["eligible"] else f"no: {r['reason']}") for r in rows],
                empty="No ranks yet")


def register(cli: click.Group) -> None:
    """Add this module's commands to `leoma`."""
    cli.add_command(replay_cmd)
    cli.add_command(explain_cmd)
    cli.add_command(get_rank)
