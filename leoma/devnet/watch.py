"""Looking at a running devnet: its progress, each validator's decisions, and the summary.

Everything here reads the validators' logs read-only (they may be writing them right now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leoma.devnet.config import Progress, devnet_consensus

if TYPE_CHECKING:
    from leoma.devnet.network import Devnet, Node


def open_log(net: Devnet, node: Node) -> Any:
    """`node`'s log, read-only; None while it does not exist or is being created."""
    from leoma.errors import LogError
    from leoma.log.eventlog import EventLog

    path = net.db_path(node)
    if not path.is_file():
        return None
    try:
        return EventLog(path, readonly=True)
    except LogError:
        return None  # the validator is creating it right now: not a log yet


def decisions(net: Devnet, node: Node) -> dict[int, Any]:
    """`node`'s own epoch decisions by epoch."""
    from leoma.tools.replay import recorded_epochs

    log = open_log(net, node)
    if log is None:
        return {}
    with log:
        return {r.body.epoch: r.body for r in recorded_epochs(log, origin=node.hotkey)}


def progress(net: Devnet) -> Progress:
    """Block, turn, tasks, verdicts, mirror lag and decisions, read from the logs."""
    from leoma.mirror.out import uploaded_position

    head = net.sim.head()
    cfg = net.config
    order = net.state.allowlist
    turn_hotkey = order[(head // cfg.interval) % len(order)]
    tasks = verdicts = lag = 0
    judged: set[int] = set()
    scored: dict[str, int] = {}
    decided: dict[str, int] = {}
    for node in net.validators:
        log = open_log(net, node)
        if log is None:
            scored[node.name], decided[node.name] = 0, -1
            continue
        with log:
            tasks += log.count(kind="task_closed", origin=node.hotkey)
            verdicts += log.count(kind="verdict_recorded", origin=node.hotkey)
            for row in log.rows(kinds=["verdict_recorded"], origin=node.hotkey):
                part = row.key.split("/")  # verdict/<task>/<miner>
                if len(part) > 1 and part[1].isdigit():
                    judged.add(int(part[1]))
            lag = max(lag, log.head(node.hotkey).origin_seq - uploaded_position(log, node.hotkey))
        mine = decisions(net, node)
        scored[node.name] = sum(1 for d in mine.values() if d.winner)
        decided[node.name] = max(mine, default=-1)
    turn = next(n.name for n in net.nodes if n.hotkey == turn_hotkey)
    return Progress(block=head, epoch=head // cfg.epoch_length, turn=turn, tasks=tasks, verdicts=verdicts,
                    mirror_lag=lag, scored=scored, judged=len(judged), decided=decided)


def target_epoch(net: Devnet, epochs: int) -> int:
    """The epoch by whose decision `epochs` epochs with a full window have been scored."""
    cfg = net.config
    first_task = (first_block(net) // cfg.interval) + 1
    # The first epoch whose settled window holds a task from every allowlisted validator.
    settled_top = first_task + len(net.state.allowlist) - 1 + cfg.settle_margin
    first_epoch = -(-settled_top * cfg.interval // cfg.epoch_length)
    return first_epoch + epochs - 1


def first_block(net: Devnet) -> int:
    """The block the validators started at (their first own event), else the head."""
    blocks = []
    for node in net.validators:
        log = open_log(net, node)
        if log is None:
            continue
        with log:
            first = next(log.chain(node.hotkey, limit=1), None)
            if first is not None:
                blocks.append(first.block)
    return min(blocks) if blocks else net.sim.head()


def summary(net: Devnet) -> dict[str, Any]:
    """Each validator's decisions, the leaderboard of the latest agreed epoch, and agreement."""
    per: dict[str, dict[int, Any]] = {n.name: decisions(net, n) for n in net.validators}
    common = sorted(set.intersection(*(set(d) for d in per.values()))) if per else []
    epochs: list[dict[str, Any]] = []
    agreed = True
    for epoch in common:
        views = {name: (d[epoch].winner, tuple((w.uid, w.weight) for w in d[epoch].weights))
                 for name, d in per.items()}
        same = len(set(views.values())) == 1
        agreed &= same
        first = per[net.validators[0].name][epoch]
        epochs.append({
            "epoch": epoch, "agreed": same,
            "winner": first.winner, "winner_name": net.miner_name(first.winner) if first.winner else "",
            "winner_uid": first.winner_uid, "burn_reason": first.burn_reason,
            "weights": {name: [list(w) for w in v[1]] for name, v in views.items()},
            "winners": {name: v[0] for name, v in views.items()},
        })
    scored = [e for e in epochs if e["winner"]]
    leaderboard: list[dict[str, Any]] = []
    if scored:
        last = per[net.validators[0].name][scored[-1]["epoch"]]
        for a in last.aggregates:
            leaderboard.append({
                "rank": a.rank, "miner": net.miner_name(a.hotkey), "hotkey": a.hotkey, "uid": a.uid,
                "avg_rate": a.avg_rate, "passed": a.passed, "evaluated": a.evaluated,
                "completeness": a.completeness, "eligible": a.eligible, "reason": a.reason,
            })
    return {
        "dir": str(net.root),
        "consensus_digest": devnet_consensus(net.config).digest,
        "api_url": net.api_url,
        "validators": [{"name": n.name, "hotkey": n.hotkey, "db": str(net.db_path(n)),
                        "bucket": str(net.bucket_path(n))} for n in net.validators],
        "miners": {b: {"hotkey": h, "uid": net.state.uids[b]} for b, h in net.state.miners.items()},
        "epochs": epochs,
        "scored_epochs": len(scored),
        "winner": scored[-1]["winner_name"] if scored else "",
        "leaderboard": leaderboard,
        "agreed": bool(agreed and scored),
    }
