"""Where a miner stands (`leoma miner status`), from whatever is reachable.

Its commitment on chain, each validation check with its reason, whether its chute is hot, its
last tasks with the judge's verdicts and reasoning, and its rank with the rate it needs to
dominate the miners that committed before it. A source that is unavailable is named, never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import msgspec

from leoma.errors import LeomaError
from leoma.log.events import CheckOutcome


class CommitmentView(msgspec.Struct, frozen=True, kw_only=True):
    """The miner's commitment in force on chain, and what validators make of its text."""

    block: int
    count: int
    text: str
    model_name: str = ""
    model_revision: str = ""
    chute_id: str = ""
    problem: str = ""
    """The `invalid_reason` validators give it before any check runs ("" when none)."""


class CheckView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest `miner_checked` for the miner in the local log."""

    validator: str
    block: int
    valid: bool
    invalid_reason: str = ""
    commit_block: int = 0
    model_name: str = ""
    model_revision: str = ""
    chute_id: str = ""
    model_hash: str = ""
    chute_hot: bool = False
    steps: tuple[CheckOutcome, ...] = ()


class ChuteView(msgspec.Struct, frozen=True, kw_only=True):
    """The chute as the Chutes API describes it now."""

    chute_id: str
    reachable: bool
    hot: bool = False
    slug: str = ""
    revision: str = ""


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """One task the miner was asked to serve: its reply and the judge's word on it."""

    task_id: int
    validator: str
    block: int
    response: str = ""
    """`accepted`, `failed` or "" (no reply recorded)."""
    failure_class: str = ""
    detail: str = ""
    latency_ms: int = 0
    verdict: str = ""
    """`passed`, `failed`, `judge_failed` or "" (not judged yet)."""
    overall: int = 0
    reasoning: str = ""
    major_issues: tuple[str, ...] = ()


class RivalView(msgspec.Struct, frozen=True, kw_only=True):
    """An eligible miner that committed earlier: the rate needed to dominate it."""

    hotkey: str
    rate: str
    needed: str
    beaten: bool


class RankView(msgspec.Struct, frozen=True, kw_only=True):
    """Where the miner stands in the latest scored epoch (recorded, or freshly computed)."""

    source: str
    """`epoch_scored` (the validator's recorded decision) or `fresh` (computed now from the log)."""
    validator: str
    epoch: int
    winner: str
    rank: int
    eligible: bool
    reason: str = ""
    avg_rate: str = "0"
    completeness: str = "0"
    commit_block: int = -1
    needed_rate: str = ""
    """The rate that dominates every earlier eligible miner ("" when none is earlier)."""
    dominates: bool = False
    earlier: tuple[RivalView, ...] = ()


class MinerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `leoma miner status` shows; `unavailable` names each source that could not be read."""

    hotkey: str
    commitment: CommitmentView | None = None
    check: CheckView | None = None
    chute: ChuteView | None = None
    tasks: tuple[TaskView, ...] = ()
    rank: RankView | None = None
    unavailable: dict[str, str] = {}
    next_step: str = ""


async def read_commitment(chain: Any, netuid: int, hotkey: str) -> CommitmentView | None:
    """The hotkey's commitment in force (None when it has none)."""
    from projections.miners import commit_count_problem, commitment_problem, parse_commitment

    history = (await chain.commitments(netuid)).get(hotkey)
    if history is None:
        return None
    latest = history.latest
    parsed = parse_commitment(latest.text)
    problem = commit_count_problem(history.count) or commitment_problem(parsed, hotkey) or ""

    def text(field: str) -> str:
        value = parsed.get(field)
        return value if isinstance(value, str) else ""

    return CommitmentView(block=history.commit_block, count=history.count, text=latest.text,
                          model_name=text("model_name"), model_revision=text("model_revision"),
                          chute_id=text("chute_id"), problem=problem)


class _MinerOnly(msgspec.Struct):
    miner: str = ""
    hotkey: str = ""


_miner_only = msgspec.json.Decoder(_MinerOnly)
_TASK_KINDS = ("miner_responded", "verdict_recorded", "judge_failed")


def read_log(rows: Any, hotkey: str, *, validator: str | None = None, last_tasks: int = 10) -> tuple[
        CheckView | None, tuple[TaskView, ...], list[tuple[str, int, Any]]]:
    """From log rows: the latest check, the last tasks and the scored epochs `(origin, block, body)`."""
    from leoma.log.events import (
        EpochScored,
        JudgeFailed,
        MinerChecked,
        MinerResponded,
        VerdictRecorded,
        decode_body,
    )

    check: tuple[int, int, str, MinerChecked] | None = None
    tasks: dict[tuple[str, int], dict[str, Any]] = {}
    epochs: list[tuple[str, int, Any]] = []
    parts: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
    for row in rows:
        if validator is not None and row.origin != validator:
            continue
        if row.kind == "epoch_detail":
            # A decision's detail parts precede it in its origin's chain (leoma.log.decisions).
            data = row.body.encode() if isinstance(row.body, str) else bytes(row.body)
            epoch_of = int(row.key.split("/")[1]) if row.key.startswith("epoch/") else -1
            parts.setdefault((row.origin, epoch_of), []).append((row.key, data))
            continue
        if row.kind == "epoch_scored":
            body = decode_body(row.body, row.v)
            if isinstance(body, EpochScored):
                if body.details:
                    from leoma.log.decisions import join
                    from leoma.errors import LogError

                    try:
                        body = join(body, parts.pop((row.origin, body.epoch), []))
                    except LogError:
                        continue  # an incomplete import: the decision cannot be read yet
                epochs.append((row.origin, row.block, body))
            continue
        if row.kind not in _TASK_KINDS and row.kind != "miner_checked":
            continue
        try:
            who = _miner_only.decode(row.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            who = _MinerOnly()
        if hotkey not in (who.miner, who.hotkey):
            continue
        body = decode_body(row.body, row.v)
        if isinstance(body, MinerChecked):
            if check is None or (row.block, row.seq) >= check[:2]:
                check = (row.block, row.seq, row.origin, body)
            continue
        if not isinstance(body, (MinerResponded, VerdictRecorded, JudgeFailed)):
            continue  # the kinds filtered above decode to these three
        entry = tasks.setdefault((row.origin, body.task_id), {"task_id": body.task_id, "validator": row.origin,
                                                               "block": row.block})
        if isinstance(body, MinerResponded):
            entry.update(response=body.status, failure_class=body.failure_class, detail=body.detail,
                         latency_ms=body.latency_ms)
        elif isinstance(body, VerdictRecorded):
            entry.update(verdict="passed" if body.passed else "failed", overall=body.overall,
                         reasoning=body.reasoning, major_issues=tuple(body.major_issues))
        elif isinstance(body, JudgeFailed):
            entry.update(verdict="judge_failed", reasoning=body.reason)
    check_view = None
    if check is not None:
        c = check[3]
        check_view = CheckView(validator=check[2], block=check[0], valid=c.valid, invalid_reason=c.invalid_reason,
                               commit_block=c.commit_block, model_name=c.model_name,
                               model_revision=c.model_revision, chute_id=c.chute_id, model_hash=c.model_hash,
                               chute_hot=c.chute_hot,
                               steps=c.checks)
    newest = sorted(tasks.values(), key=lambda t: (-t["task_id"], t["validator"]))[:last_tasks]
    return check_view, tuple(TaskView(**t) for t in newest), epochs


def rank_view(scored: Any, hotkey: str, threshold: Fraction, *, validator: str, source: str) -> RankView | None:
    """The miner's place in an `EpochScored`, with the rate it needs against earlier miners."""
    from projections.ranking import Standing, explain

    me = next((a for a in scored.aggregates if a.hotkey == hotkey), None)
    if me is None:
        return None

    def standing(a: Any) -> Standing:
        return Standing(hotkey=a.hotkey, rate=Fraction(a.avg_rate), passed=a.passed,
                        commit_block=a.commit_block if a.commit_block >= 0 else None)

    # Only eligible miners compete; the miner itself is added to see what it would need.
    field = [standing(a) for a in scored.aggregates if a.eligible or a.hotkey == hotkey]
    why = explain(field, threshold, hotkey)
    needed = max((c.needed for c in why.comparisons), default=None)
    return RankView(
        source=source, validator=validator, epoch=scored.epoch, winner=scored.winner, rank=me.rank,
        eligible=me.eligible, reason=me.reason, avg_rate=me.avg_rate, completeness=me.completeness,
        commit_block=me.commit_block, needed_rate=str(needed) if needed is not None else "",
        dominates=why.dominates,
        earlier=tuple(RivalView(hotkey=c.earlier, rate=str(c.earlier_rate), needed=str(c.needed), beaten=c.beaten)
                      for c in why.comparisons),
    )


def _fresh_epoch(log: Any, own: str, netuid: int, consensus: Any) -> Any:
    from projections.epoch import KINDS, score_epoch

    rows = list(log.rows(kinds=KINDS))
    if not rows:
        return None
    block = max(r.block for r in rows)
    return score_epoch(rows, own=own, epoch=block // max(1, consensus.epoch.length), epoch_block=block,
                       netuid=netuid, consensus=consensus)


def next_step(status: MinerStatus) -> str:
    """The one thing the miner should do (or wait for) next, from what is known."""
    c, chk, chute = status.commitment, status.check, status.chute
    if c is None and "chain" not in status.unavailable:
        return "no commitment on chain: deploy with `leoma miner push`, then run the `leoma miner commit` it prints"
    if c is not None and c.problem:
        return f"validators reject your commitment ({c.problem}): fix it and commit again"
    if chute is not None and chute.reachable and not chute.hot:
        return f"chute {chute.chute_id} is cold: warm it up (GET /chutes/warmup/{chute.chute_id}) and keep it hot"
    if chk is None:
        return "not checked yet by this validator: checks run every few minutes after the commitment is revealed"
    if c is not None and 0 < chk.commit_block < c.block:
        return "your latest commitment is newer than the last check: wait for the next check"
    if not chk.valid:
        return f"the last check failed ({chk.invalid_reason}): fix that and, if the model changed, commit again"
    if not status.tasks:
        return "valid: wait for the next task (each validator samples on its rotation turn)"
    r = status.rank
    if r is None:
        return "valid and sampled: wait for the next scored epoch"
    if r.winner == status.hotkey:
        return "you are the winner of the latest epoch"
    if not r.eligible:
        return f"not eligible in the latest epoch ({r.reason})"
    if r.needed_rate:
        return f"to win, raise your average pass rate to {r.needed_rate} (now {r.avg_rate})"
    return "eligible; the earliest committer keeps the crown unless a later miner dominates it"


async def miner_status(
    hotkey: str,
    *,
    netuid: int,
    chain: Any = None,
    log: Any = None,
    chutes: Any = None,
    consensus: Any = None,
    validator: str | None = None,
    last_tasks: int = 10,
    unavailable: Mapping[str, str] | None = None,
) -> MinerStatus:
    """Gather the miner's standing from every source given; a source that fails is named, not fatal."""
    from leoma.log.consensus import DEFAULT

    consensus = consensus or DEFAULT
    missing: dict[str, str] = dict(unavailable or {})
    commitment = check = chute = rank = None
    tasks: tuple[TaskView, ...] = ()
    if chain is not None:
        try:
            commitment = await read_commitment(chain, netuid, hotkey)
        except Exception as exc:  # any failure of the chain must leave the other sources usable
            missing["chain"] = f"{type(exc).__name__}: {exc}"
    elif "chain" not in missing:
        missing["chain"] = "no network given"
    if log is not None:
        try:
            check, tasks, epochs = read_log(log.rows(), hotkey, validator=validator, last_tasks=last_tasks)
            own = validator or (check.validator if check else None)
            mine = [e for e in epochs if own is None or e[0] == own]
            # The newest decision that speaks of this miner (a newer one may predate its check).
            present = [e for e in mine if any(a.hotkey == hotkey for a in e[2].aggregates)]
            if mine:
                origin, _block, scored = max(present or mine, key=lambda e: (e[1], e[2].epoch))
                rank = rank_view(scored, hotkey, consensus.dominance_threshold, validator=origin, source="epoch_scored")
            elif own is not None:
                scored = _fresh_epoch(log, own, netuid, consensus)
                if scored is not None:
                    rank = rank_view(scored, hotkey, consensus.dominance_threshold, validator=own, source="fresh")
        except LeomaError as exc:
            missing["log"] = str(exc)
    elif "log" not in missing:
        missing["log"] = "no validator log given"
    chute_id = (commitment.chute_id if commitment else "") or (check.chute_id if check else "")
    if chutes is not None and chute_id:
        info = await chutes.chute_info(chute_id)
        chute = (ChuteView(chute_id=chute_id, reachable=True, hot=info.hot, slug=info.slug, revision=info.revision)
                 if info is not None else ChuteView(chute_id=chute_id, reachable=False))
        if info is None:
            missing["chutes"] = f"the Chutes API did not describe chute {chute_id}"
    elif chutes is None:
        missing.setdefault("chutes", "no Chutes API given")
    status = MinerStatus(hotkey=hotkey, commitment=commitment, check=check, chute=chute, tasks=tasks, rank=rank,
                         unavailable=dict(sorted(missing.items())))
    return msgspec.structs.replace(status, next_step=next_step(status))
