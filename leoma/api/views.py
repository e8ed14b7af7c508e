"""The seed's response shapes (seed-spec §7.3, §7.6), built from `ApiState`.

Every function here reads the fold and returns plain JSON-ready values; none writes, none reads
a clock (`now` is passed in), none performs I/O except through the `presign` callable the app
hands to the task views. Field names are the seed's; a few fields are added (marked in the
docstrings) where the event log knows more than the seed's database did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import msgspec

from leoma.api.miners import ConsensusMiner, Report, miner_consensus
from leoma.api.state import ApiState, Decision, TaskRecord
from leoma.log.events import EpochScored, MinerAggregate
from leoma.mirror.seedformat import first_frame_key, generated_video_key, original_clip_key

ONLINE_SECONDS = 15 * 60
RAO_PER_TAO = 10**9

Presign = Callable[[str, str], Awaitable[str | None]]
"""`presign(sampler_hotkey, key)` -> a URL, or None when the sampler's bucket is unknown."""


def iso(at: int | None) -> str | None:
    """Seconds since the epoch as ISO-8601 UTC (None for 0 / unknown)."""
    return datetime.fromtimestamp(at, timezone.utc).isoformat() if at else None


def rate(text: str | Fraction) -> float:
    """An exact fraction (`"3/4"`) as a float, for display only."""
    return float(Fraction(text))


# -- miners ---------------------------------------------------------------------------------


def consensus(state: ApiState, now: int, stale_seconds: int) -> dict[str, ConsensusMiner]:
    """The majority consensus of every validator's newest reports; blacklisted miners are invalid."""
    latest: dict[str, dict[str, Report]] = {}
    for v in sorted(set(state.posted_reports) | set(state.mirror_checks)):
        posted_at, posted = state.posted_reports.get(v, (0, {}))
        mine = {m: Report(validator=v, at=posted_at, check=c) for m, c in posted.items()}
        for m, (at, check) in state.mirror_checks.get(v, {}).items():
            if (v not in state.posted_reports or at > posted_at) and (m not in mine or at >= mine[m].at):
                mine[m] = Report(validator=v, at=at, check=check)
        latest[v] = mine
    rows = miner_consensus(latest, now, stale_seconds)
    for hotkey in rows:
        if hotkey in state.blacklist:
            rows[hotkey] = msgspec.structs.replace(rows[hotkey], is_valid=False, invalid_reason="blacklisted")
    return rows


def miner_response(m: ConsensusMiner) -> dict[str, Any]:
    """`MinerResponse` (+ `votes_valid`, `votes_total`)."""
    return {
        "uid": m.uid, "hotkey": m.hotkey, "model_name": m.model_name, "model_revision": m.model_revision,
        "model_hash": m.model_hash, "chute_id": m.chute_id, "chute_slug": m.chute_slug, "is_valid": m.is_valid,
        "invalid_reason": m.invalid_reason, "block": m.block, "last_validated_at": iso(m.last_validated_at),
        "votes_valid": m.votes_valid, "votes_total": m.votes_total,
    }


def miners_list(rows: dict[str, ConsensusMiner], *, valid_only: bool = False) -> dict[str, Any]:
    """`{"miners", "total", "valid_count"}` sorted by uid."""
    chosen = [m for m in rows.values() if m.is_valid or not valid_only]
    chosen.sort(key=lambda m: (m.uid, m.hotkey))
    return {"miners": [miner_response(m) for m in chosen], "total": len(rows),
            "valid_count": sum(1 for m in rows.values() if m.is_valid)}


def aggregates(dec: Decision | None) -> list[MinerAggregate]:
    return list(dec.decision.aggregates) if dec else []


def rank_entry(a: MinerAggregate) -> dict[str, Any]:
    """A `/scores/rank` row (+ `evaluated`, `completeness`, `reason`, per-validator `rates`)."""
    return {
        "miner_hotkey": a.hotkey, "uid": a.uid if a.uid >= 0 else None, "rank": a.rank or None,
        "passed_count": a.passed, "pass_rate": rate(a.avg_rate), "block": a.commit_block if a.commit_block > 0 else None,
        "eligible": a.eligible, "evaluated": a.evaluated, "tasks": a.tasks, "completeness": rate(a.completeness),
        "reason": a.reason,
        "rates": [{"validator_hotkey": r.validator, "passed": r.passed, "evaluated": r.evaluated,
                   "pass_rate": r.passed / r.evaluated if r.evaluated else 0.0} for r in a.rates],
    }


def decision_summary(dec: Decision | None) -> dict[str, Any]:
    """Which decision a leaderboard comes from (added fields on several routes)."""
    if dec is None:
        return {"reference": None, "epoch": None, "epoch_block": None, "winner": None, "winner_uid": None,
                "burn_reason": "no validator data yet", "reproduced": None, "past_frontier": 0, "short_of_frontier": 0,
                "window_start": None, "window_end": None}
    d = dec.decision
    return {"reference": dec.reference, "epoch": dec.epoch, "epoch_block": dec.epoch_block, "winner": d.winner or None,
            "winner_uid": d.winner_uid, "burn_reason": d.burn_reason or None, "reproduced": dec.reproduced,
            "past_frontier": dec.past_frontier, "short_of_frontier": dec.short_of_frontier,
            "window_start": d.window[0] if d.window else None, "window_end": d.window[-1] if d.window else None}


def scores_rank(dec: Decision | None) -> dict[str, Any]:
    """`{"ranks": [...]}`: ranked miners in rank order, then the unranked with their reason."""
    ordered = sorted(aggregates(dec), key=lambda a: (a.rank == 0, a.rank, a.hotkey))
    return {"ranks": [rank_entry(a) for a in ordered], **decision_summary(dec)}


def miners_active(state: ApiState, rows: dict[str, ConsensusMiner], dec: Decision | None) -> list[dict[str, Any]]:
    """`[ActiveMinerEntry]`: consensus-valid miners with their window activity (§7.6)."""
    aggs = {a.hotkey: a for a in aggregates(dec)}
    window = set(dec.decision.window) if dec else set()
    winner = dec.decision.winner if dec else ""
    out: list[dict[str, Any]] = []
    for m in rows.values():
        if not m.is_valid:
            continue
        a = aggs.get(m.hotkey)
        last_at, latencies, validators = 0, [], set()
        for t in window:
            for rec in state.tasks.get(t, {}).values():
                if m.hotkey in rec.verdicts:
                    validators.add(rec.origin)
                    last_at = max(last_at, rec.verdicts[m.hotkey][1])
                resp = rec.responses.get(m.hotkey)
                if resp and resp[0].latency_ms:
                    latencies.append(resp[0].latency_ms)
        out.append({
            "uid": m.uid, "hotkey": m.hotkey, "model_name": m.model_name, "model_revision": m.model_revision,
            "chute_slug": m.chute_slug, "block": m.block, "active": True, "eligible": bool(a and a.eligible),
            "rank": (a.rank or None) if a else None, "weight": 1.0 if m.hotkey == winner else 0.0,
            "score": rate(a.avg_rate) if a else 0.0, "tasks_passed": a.passed if a else 0,
            "tasks_evaluated": a.evaluated if a else 0, "validators_evaluating": len(validators),
            "last_evaluated_at": iso(last_at), "avg_latency_ms": sum(latencies) // len(latencies) if latencies else None,
            "validator_scores": sorted(r.passed / r.evaluated for r in a.rates if r.evaluated) if a else [],
        })
    out.sort(key=lambda e: (e["rank"] or 10**9, -e["score"], e["hotkey"]))
    return out


# -- samples and tasks ----------------------------------------------------------------------


def _overall(v: Any) -> int:
    return int(v.overall)


def sample(rec: TaskRecord, miner: str) -> dict[str, Any]:
    """`SampleResponse` (+ `overall_score`, `aspect_scores`) of one verdict."""
    verdict, at, _, seq = rec.verdicts[miner]
    resp = rec.responses.get(miner)
    return {
        "id": seq, "task_id": rec.task_id, "validator_hotkey": rec.origin, "miner_hotkey": miner,
        "prompt": rec.opened.prompt if rec.opened else None, "passed": verdict.passed,
        "confidence": verdict.confidence, "reasoning": verdict.reasoning or None, "evaluated_at": iso(at),
        "latency_ms": resp[0].latency_ms if resp and resp[0].latency_ms else None,
        "overall_score": _overall(verdict), "aspect_scores": dict(verdict.aspects),
    }


def samples(state: ApiState, *, validator: str | None = None, miner: str | None = None,
            task_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Verdicts newest first, optionally of one validator, miner or task (the current word only)."""
    out = []
    for _, seq, origin, t, m in state.verdict_rows([validator] if validator else None):
        if (miner is not None and m != miner) or (task_id is not None and t != task_id):
            continue
        rec = state.tasks[t][origin]
        if rec.verdicts[m][3] != seq:
            continue  # superseded by a later verdict of the same validator
        out.append(sample(rec, m))
        if len(out) >= limit:
            break
    if task_id is not None:
        out.sort(key=lambda s: s["miner_hotkey"])
    return out


def task_record(state: ApiState, task_id: int) -> TaskRecord | None:
    """The task's record: the earliest opening that has verdicts, else the earliest opening."""
    records = list(state.tasks.get(task_id, {}).values())
    if not records:
        return None
    records.sort(key=lambda r: (r.opened is None, r.opened_block, r.origin))
    with_verdicts = [r for r in records if r.verdicts]
    return with_verdicts[0] if with_verdicts else records[0]


def miner_tasks(state: ApiState, miner: str) -> list[dict[str, Any]]:
    """`[MinerTaskEntry]` over every task with a verdict for `miner`, newest task first."""
    out = []
    for task_id in sorted(state.tasks, reverse=True):
        rec = task_record(state, task_id)
        if rec is None or miner not in rec.verdicts:
            continue
        verdict, at, _, _ = rec.verdicts[miner]
        resp = rec.responses.get(miner)
        out.append({"task_id": task_id, "passed": verdict.passed, "validator_hotkey": rec.origin,
                    "overall_score": _overall(verdict), "latency_ms": resp[0].latency_ms if resp else None,
                    "updated": iso(at)})
    return out


async def _urls(presign: Presign, sampler: str, keys: dict[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, key in keys.items():
        try:
            out[name] = await presign(sampler, key)
        except Exception:  # one unsignable object never hides the others (seed §4.5)
            out[name] = None
    return out


async def task_detail(state: ApiState, task_id: int, presign: Presign) -> dict[str, Any] | None:
    """`TaskDetailResponse` (+ `interval`, `opened_block`, per-miner `status` and `overall_score`)."""
    rec = task_record(state, task_id)
    if rec is None:
        return None
    urls = await _urls(presign, rec.origin, {"first_frame_url": first_frame_key(task_id),
                                             "original_clip_url": original_clip_key(task_id)})
    miners = sorted(set(rec.verdicts) | set(rec.responses) | set(rec.opened.miners if rec.opened else ()))
    entries = []
    for m in miners:
        verdict = rec.verdicts.get(m)
        resp = rec.responses.get(m)
        entries.append({
            "miner_hotkey": m, "passed": verdict[0].passed if verdict else False,
            "latency_ms": resp[0].latency_ms if resp and resp[0].latency_ms else None,
            "updated": iso(verdict[1] if verdict else (resp[1] if resp else 0)),
            "status": resp[0].status if resp else ("judged" if verdict else "no response"),
            "overall_score": _overall(verdict[0]) if verdict else None,
        })
    entries.sort(key=lambda e: (not e["passed"], e["miner_hotkey"]))
    return {
        "task_id": task_id, "description": rec.opened.prompt if rec.opened else None, "s3_prefix": str(task_id),
        "first_frame_path": first_frame_key(task_id), "original_clip_path": original_clip_key(task_id),
        **urls, "miner_count": len(entries), "sampler_hotkey": rec.origin, "miners": entries,
        "opened_block": rec.opened_block or None, "interval": rec.opened.interval if rec.opened else None,
    }


async def task_miner_detail(state: ApiState, task_id: int, miner: str, presign: Presign) -> dict[str, Any] | None:
    """`TaskMinerDetailResponse`: every validator's verdict on one miner's video of a task."""
    records = [r for r in state.tasks.get(task_id, {}).values() if miner in r.verdicts]
    if not records:
        return None
    records.sort(key=lambda r: r.origin)
    rec = task_record(state, task_id) or records[0]
    sampler = rec.origin if miner in rec.verdicts else records[0].origin
    urls = await _urls(presign, sampler, {"first_frame_url": first_frame_key(task_id),
                                          "original_clip_url": original_clip_key(task_id),
                                          "generated_video_url": generated_video_key(task_id, miner)})
    validators = []
    for r in records:
        v, at, _, _ = r.verdicts[miner]
        validators.append({"validator_hotkey": r.origin, "passed": v.passed, "evaluated_at": iso(at),
                           "confidence": v.confidence, "reasoning": v.reasoning or None,
                           "aspect_scores": dict(v.aspects) or None, "overall_score": v.overall})
    main = state.tasks[task_id][sampler]
    resp = main.responses.get(miner)
    return {
        "task_id": task_id, "miner_hotkey": miner, "description": main.opened.prompt if main.opened else None,
        "s3_prefix": str(task_id), "first_frame_path": first_frame_key(task_id),
        "original_clip_path": original_clip_key(task_id), "generated_video_path": generated_video_key(task_id, miner),
        **urls, "validators": validators, "final_passed": main.verdicts[miner][0].passed,
        "latency_ms": resp[0].latency_ms if resp and resp[0].latency_ms else None,
    }


# -- scores ---------------------------------------------------------------------------------


def scores(dec: Decision | None, updated_at: int) -> dict[str, Any]:
    """`/scores`: each miner's window tallies under the reference decision."""
    out = {}
    for a in aggregates(dec):
        if a.evaluated == 0:
            continue
        out[a.hotkey] = {"avg_score": rate(a.avg_rate), "total_samples": a.evaluated, "total_passed": a.passed,
                         "pass_rate": a.passed / a.evaluated, "validator_count": len(a.rates)}
    active = dec.decision.active if dec else ()
    return {"scores": out, "total_validators": len(active), "updated_at": iso(updated_at)}


def _by_validator(dec: Decision | None) -> dict[str, list[tuple[str, int, int]]]:
    table: dict[str, list[tuple[str, int, int]]] = {}
    for a in aggregates(dec):
        for r in a.rates:
            table.setdefault(r.validator, []).append((a.hotkey, r.passed, r.evaluated))
    return table


def scores_validators(dec: Decision | None, updated_at: int) -> list[dict[str, Any]]:
    """`/scores/validators`: per validator, its verdict tallies in the window."""
    out = []
    for v, items in sorted(_by_validator(dec).items()):
        samples_n = sum(e for _, _, e in items)
        passed = sum(p for _, p, _ in items)
        rates = [p / e for _, p, e in items if e]
        out.append({"validator_hotkey": v, "total_samples": samples_n, "total_passed": passed,
                    "avg_score": sum(rates) / len(rates) if rates else 0.0,
                    "pass_rate": passed / samples_n if samples_n else 0.0, "last_updated": iso(updated_at)})
    return out


def scores_miner(dec: Decision | None, miner: str, updated_at: int) -> dict[str, Any] | None:
    """`/scores/miner/{hk}` (None when the miner has no verdict in the window)."""
    a = next((x for x in aggregates(dec) if x.hotkey == miner and x.evaluated), None)
    if a is None:
        return None
    by_validator = [{"validator_hotkey": r.validator, "score": r.passed / r.evaluated if r.evaluated else 0.0,
                     "total_samples": r.evaluated, "total_passed": r.passed,
                     "pass_rate": r.passed / r.evaluated if r.evaluated else 0.0, "updated_at": iso(updated_at)}
                    for r in a.rates]
    return {"miner_hotkey": miner, "by_validator": by_validator,
            "aggregated": {"total_samples": a.evaluated, "total_passed": a.passed, "avg_score": rate(a.avg_rate),
                           "pass_rate": a.passed / a.evaluated, "validator_count": len(a.rates)}}


def scores_validator(dec: Decision | None, validator: str, updated_at: int) -> dict[str, Any] | None:
    """`/scores/validator/{hk}` (None when the validator has no verdict in the window)."""
    items = _by_validator(dec).get(validator)
    if not items:
        return None
    rows = [{"miner_hotkey": m, "score": p / e if e else 0.0, "total_samples": e, "total_passed": p,
             "pass_rate": p / e if e else 0.0, "updated_at": iso(updated_at)} for m, p, e in items]
    return {"validator_hotkey": validator, "scores": rows, "total_miners": len(rows)}


def scores_stats(state: ApiState, dec: Decision | None) -> dict[str, Any]:
    """`/scores/stats`."""
    aggs = [a for a in aggregates(dec) if a.evaluated]
    total = sum(a.evaluated for a in aggs)
    return {"total_validators": len(dec.decision.active) if dec else 0, "total_miners": len(aggs),
            "total_samples": len(state.samples), "total_score_entries": sum(len(a.rates) for a in aggs),
            "overall_pass_rate": sum(a.passed for a in aggs) / total if total else 0.0}


def weights(dec: Decision | None) -> dict[str, Any]:
    """`/weights`: the reference decision's weight vector, per ranked miner."""
    if dec is None:
        return {"winner_uid": 0, "miners": [], **decision_summary(dec)}
    d = dec.decision
    total = sum(w.weight for w in d.weights) or 1
    paid = {w.uid: w.weight / total for w in d.weights}
    miners = [{"miner_hotkey": a.hotkey, "uid": max(a.uid, 0), "pass_rate": rate(a.avg_rate),
               "weight": paid.get(a.uid, 0.0) if a.hotkey == d.winner else 0.0}
              for a in sorted(d.aggregates, key=lambda a: (a.rank == 0, a.rank, a.hotkey)) if a.rank]
    return {"winner_uid": d.winner_uid, "miners": miners, **decision_summary(dec)}


# -- validators -----------------------------------------------------------------------------


def _decision_row(origin: str, item: tuple[int, int, int, EpochScored] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    block, _, at, d = item
    return {"validator_hotkey": origin, "epoch": d.epoch, "block": block, "recorded_at": iso(at),
            "winner": d.winner or None, "winner_uid": d.winner_uid, "burn_reason": d.burn_reason or None,
            "weights": [{"uid": w.uid, "weight": w.weight} for w in d.weights],
            "consensus_digest": d.consensus_digest, "window_start": d.window[0] if d.window else None,
            "window_end": d.window[-1] if d.window else None}


def epochs(state: ApiState) -> dict[str, Any]:
    """Each validator's newest `epoch_scored` and whether it agrees with the majority of its epoch."""
    rows = [r for o in sorted(state.decisions) if (r := _decision_row(o, state.newest_decision(o)))]
    newest = max((r["epoch"] for r in rows), default=None)
    votes: dict[tuple[Any, ...], int] = {}
    for r in rows:
        if r["epoch"] == newest:
            key = (r["winner_uid"], tuple((w["uid"], w["weight"]) for w in r["weights"]))
            votes[key] = votes.get(key, 0) + 1
    top = max(sorted(votes), key=lambda k: votes[k]) if votes else None
    voters = sum(votes.values())
    # A majority is more than half of the validators at the newest epoch; a tie is a split.
    majority = top if top is not None and 2 * votes[top] > voters else None
    for r in rows:
        key = (r["winner_uid"], tuple((w["uid"], w["weight"]) for w in r["weights"]))
        r["epochs_behind"] = newest - r["epoch"] if newest is not None else 0
        r["agrees"] = r["epoch"] == newest and key == majority
    return {"epoch": newest, "majority_winner_uid": majority[0] if majority else None,
            "agreeing": votes.get(majority, 0) if majority else 0, "split": bool(votes) and majority is None,
            "validators": rows,
            "disagreement": any(not r["agrees"] for r in rows)}


def lead_history(state: ApiState, reference: str, limit: int = 100) -> list[dict[str, Any]]:
    """The winner's lead per epoch in the reference's decisions: its rate minus the best other eligible rate."""
    latest: dict[int, EpochScored] = {}
    for _, seq, _, d in sorted(state.lead_decisions(reference), key=lambda x: x[1]):
        latest[d.epoch] = d
    out = []
    for epoch in sorted(latest)[-limit:]:
        d = latest[epoch]
        eligible = sorted((a for a in d.aggregates if a.eligible), key=lambda a: -Fraction(a.avg_rate))
        win = next((a for a in d.aggregates if a.hotkey == d.winner), None)
        other = next((a for a in eligible if a.hotkey != d.winner), None)
        lead = rate(Fraction(win.avg_rate) - Fraction(other.avg_rate)) if win and other else (rate(win.avg_rate) if win else 0.0)
        out.append({"epoch": epoch, "winner": d.winner or None, "winner_rate": rate(win.avg_rate) if win else None,
                    "runner_up": other.hotkey if other else None,
                    "runner_up_rate": rate(other.avg_rate) if other else None, "lead": lead})
    return out


def validator_card(state: ApiState, hotkey: str, dec: Decision | None, order: list[str], now: int) -> dict[str, Any]:
    """`ValidatorCard` (+ `mirror` liveness and lag, `latest_decision`)."""
    entry = state.registry.get(hotkey)
    uid, stake_rao = (entry.uid, entry.stake_rao) if entry else (-1, 0)
    if state.metagraph is not None:
        meta = state.metagraph[2]
        if hotkey in meta.hotkeys:
            m_uid = meta.hotkeys.index(hotkey)
            uid = uid if uid >= 0 else m_uid
            if not stake_rao and m_uid < len(meta.stakes_rao):
                stake_rao = meta.stakes_rao[m_uid]
    info = state.origins.get(hotkey)
    opened = sorted(((t, r) for t, by in state.tasks.items() if (r := by.get(hotkey)) and r.opened),
                    key=lambda x: x[0])
    evaluations = sum(len(r.verdicts) for by in state.tasks.values() if (r := by.get(hotkey)))
    latencies = [resp.latency_ms for by in state.tasks.values() if (r := by.get(hotkey))
                 for resp, _ in r.responses.values() if resp.latency_ms]
    window = dec.decision.window if dec else ()
    expected = sum(1 for t in window if order and order[t % len(order)] == hotkey)
    sampled = len(opened)
    participation = min(1.0, sampled / expected) if expected else (1.0 if sampled else 0.0)
    last_seen = max(info.last_at if info else 0, state.posted_reports.get(hotkey, (0, {}))[0])
    head = state.head_block()
    return {
        "uid": uid, "hotkey": hotkey, "stake": stake_rao / RAO_PER_TAO,
        "permissioned": hotkey in state.registry or hotkey in order,
        "online": bool(last_seen) and now - last_seen <= ONLINE_SECONDS,
        "last_sampled_task_id": opened[-1][0] if opened else None,
        "last_sampled_at": iso(opened[-1][1].opened_at) if opened else None,
        "tasks_sampled": sampled, "expected_turns": expected, "participation_rate": participation,
        "evaluations": evaluations, "avg_latency_ms": sum(latencies) // len(latencies) if latencies else None,
        "last_seen_at": iso(last_seen),
        "mirror": {"events": info.events if info else 0, "head_seq": info.head_seq if info else 0,
                   "last_block": info.last_block if info else None,
                   "blocks_behind": head - info.last_block if info else None,
                   "last_event_at": iso(info.last_at) if info else None,
                   "lag_seconds": now - info.last_at if info and info.last_at else None},
        "latest_decision": _decision_row(hotkey, state.newest_decision(hotkey)),
    }


def validator_hotkeys(state: ApiState) -> list[str]:
    """Every validator the API knows of: registry, allowlists and origins with events."""
    known = set(state.registry) | {o for o in state.origins if o != state.own}
    for _, _, allow in state.allowlists.values():
        known.update(allow.validators)
    return sorted(known)


def validators(state: ApiState, dec: Decision | None, now: int) -> list[dict[str, Any]]:
    """`[ValidatorCard]` sorted by participation, highest first."""
    order = state.validators()
    cards = [validator_card(state, h, dec, order, now) for h in validator_hotkeys(state)]
    cards.sort(key=lambda c: (-c["participation_rate"], c["hotkey"]))
    return cards


def validator_detail(state: ApiState, hotkey: str, dec: Decision | None, now: int) -> dict[str, Any]:
    """`ValidatorDetailResponse`: the card plus the validator's per-miner window tallies."""
    card = validator_card(state, hotkey, dec, state.validators(), now)
    if hotkey not in state.registry and hotkey not in state.validators():
        card.update(uid=-1, stake=0.0, permissioned=False)
    items = _by_validator(dec).get(hotkey, [])
    card["miner_scores"] = [{"miner_hotkey": m, "pass_rate": p / e if e else 0.0, "total_samples": e,
                             "total_passed": p} for m, p, e in items]
    return card


# -- overview, blacklist, health, admin history ---------------------------------------------


def overview(state: ApiState, rows: dict[str, ConsensusMiner], dec: Decision | None,
             default_interval: int) -> dict[str, Any]:
    """`/overview` (+ the leaderboard's decision summary and the head block)."""
    from projections.rotation import primary_sampler, task_id_for_block

    order = state.validators()
    interval = state.interval(default_interval)
    head = state.head_block()
    latest_task = max(state.tasks, default=None)
    latest_rec = task_record(state, latest_task) if latest_task is not None else None
    valid = sum(1 for m in rows.values() if m.is_valid)
    known = validator_hotkeys(state)
    return {
        "active_miners": valid, "valid_miners": valid, "total_miners": len(rows),
        "total_validators": len(known), "permissioned_validators": len(set(order) | set(state.registry)),
        "rotation_interval": interval,
        "current_sampler": primary_sampler(order, task_id_for_block(head, interval)) if head else None,
        "latest_task_id": latest_task, "latest_task_validator": latest_rec.origin if latest_rec else None,
        "head_block": head or None, **decision_summary(dec),
    }


def blacklist(state: ApiState) -> list[dict[str, Any]]:
    """`/blacklist`: every entry, oldest first."""
    return [{"hotkey": e.hotkey, "reason": e.reason, "added_by": e.added_by, "created_at": iso(e.at)}
            for e in sorted(state.blacklist.values(), key=lambda e: (e.at, e.hotkey))]


def admin_history(state: ApiState, limit: int = 200) -> list[dict[str, Any]]:
    """Every admin action, newest first: who did what to whom, when (from `admin_acted` events)."""
    out = []
    for seq, at, a in reversed(state.admin_history[-limit:]):
        out.append({"seq": seq, "at": iso(at), "admin": a.admin, "action": a.action, "target": a.target,
                    "reason": a.reason or None, "uid": a.uid if a.uid >= 0 else None,
                    "stake_rao": a.stake_rao if a.stake_rao >= 0 else None})
    return out


def recent_tasks(state: ApiState, limit: int) -> list[int]:
    """The newest task ids that have an opening or a verdict."""
    return sorted(state.tasks, reverse=True)[:limit]
