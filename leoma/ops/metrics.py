"""What a running validator knows about itself: facts from the log, rendered for Prometheus.

`collect_facts(log, ...)` reads the event log (and whatever live state the caller passes: the
chain head, the loops' heartbeats, the peers' published heads) into one `Facts` struct. The
same facts feed `/metrics` (`render_prometheus`), `/healthz` (`health`) and `leoma status`, so
the three never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from leoma.log.eventlog import EventLog

__all__ = ["Facts", "LoopFact", "PeerFact", "collect_facts", "health", "render_prometheus", "CONTENT_TYPE", "OVERDUE_TEMPOS",
           "OVERDUE_EPOCHS"]

OVERDUE_TEMPOS = 3  # weights this many tempos late fail /healthz (one late tempo is normal jitter)
OVERDUE_EPOCHS = 3
"""Epochs without a decision that landed on chain before `/healthz` is degraded (default of
LEOMA_WEIGHTS_OVERDUE_EPOCHS): the current epoch's may still be on its way, so one is normal."""
FOLD_CHECKPOINT = "projection/epoch_fold"


class LoopFact(msgspec.Struct, frozen=True, kw_only=True):
    """One supervised loop: alive, when it last finished a round, how often it restarted."""

    name: str
    running: bool
    last_beat: float = 0.0
    """Unix time the loop last finished a round (0: never)."""
    restarts: int = 0
    stalled: bool = False
    last_error: str = ""


class PeerFact(msgspec.Struct, frozen=True, kw_only=True):
    """A peer: how much of its log is imported, how much it published (-1: not read yet)."""

    hotkey: str
    imported: int
    published: int = -1
    problem: str = ""

    @property
    def lag(self) -> int:
        """Published events not imported yet (0 while the published head is unknown)."""
        return max(0, self.published - self.imported) if self.published >= 0 else 0


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers behind `/metrics`, `/healthz` and `leoma status`."""

    own: str
    log_head: int
    uploaded_head: int
    log_rows: int
    projection_lag: int
    tasks_sampled: int
    judge_failures: int
    responses: dict[str, int]
    """`accepted`, `failed/miner`, `failed/infra` -> count of own `miner_responded` events."""
    peers: tuple[PeerFact, ...] = ()
    chain_head: int | None = None
    last_weights_block: int | None = None
    last_weights_epoch: int | None = None
    last_scored_epoch: int | None = None
    last_winner: str = ""
    started_block: int | None = None
    tempo: int = 360
    loops: tuple[LoopFact, ...] = ()
    rejected_peer_objects: int = 0
    epoch_length: int = 0
    """Blocks per decision epoch (the consensus's); 0 when unknown."""
    overdue_epochs: int = OVERDUE_EPOCHS

    @property
    def epochs_without_weights(self) -> int | None:
        """Epochs since the newest decision that landed (confirmed on chain), counting from the
        epoch of the start when none did; None without a head or an epoch length."""
        if self.chain_head is None or self.epoch_length <= 0:
            return None
        current = self.chain_head // self.epoch_length
        if self.last_weights_epoch is not None:
            return max(0, current - self.last_weights_epoch)
        if self.started_block is None:
            return None
        return max(0, current - self.started_block // self.epoch_length)

    @property
    def weights_overdue(self) -> bool:
        """More than `overdue_epochs` epochs went by without a decision landing."""
        since = self.epochs_without_weights
        return since is not None and since > self.overdue_epochs

    @property
    def blocks_since_weights(self) -> int | None:
        """Blocks since the weights were last confirmed (since start when never), None without a head."""
        if self.chain_head is None:
            return None
        since = self.last_weights_block if self.last_weights_block is not None else self.started_block
        return None if since is None else max(0, self.chain_head - since)

    @property
    def mirror_lag(self) -> int:
        return max(0, self.log_head - self.uploaded_head)


class _FoldPosition(msgspec.Struct):
    last_seq: int = 0


def _one(log: EventLog, sql: str, args: tuple[object, ...]) -> tuple:
    return log.conn.execute(sql, args).fetchone() or ()


def collect_facts(
    log: EventLog,
    own: str,
    *,
    chain_head: int | None = None,
    started_block: int | None = None,
    tempo: int = 360,
    loops: Iterable[LoopFact] = (),
    published: Mapping[str, int] | None = None,
    peer_problems: Mapping[str, str] | None = None,
    peers: Iterable[str] = (),
    epoch_length: int = 0,
    overdue_epochs: int = OVERDUE_EPOCHS,
) -> Facts:
    """Read the facts from `log` (own origin `own`) and the caller's live state."""
    from leoma.mirror.out import uploaded_position

    oid = log._origin_ids.get(own)  # noqa: SLF001 - one cheap lookup instead of a scan
    responses: dict[str, int] = {"accepted": 0, "failed/miner": 0, "failed/infra": 0}
    last_weights_block = last_weights_epoch = last_scored = None
    winner = ""
    if oid is not None:
        for status, klass, n in log.conn.execute(
            "SELECT json_extract(body, '$.status'), coalesce(json_extract(body, '$.failure_class'), ''), count(*)"
            " FROM events WHERE origin_id = ? AND kind = 'miner_responded' GROUP BY 1, 2", (oid,)):
            name = "accepted" if status == "accepted" else f"failed/{klass or 'miner'}"
            responses[name] = responses.get(name, 0) + n
        row = _one(log, "SELECT block, json_extract(body, '$.epoch') FROM events WHERE origin_id = ? AND "
                        "kind = 'weights_confirmed' ORDER BY origin_seq DESC LIMIT 1", (oid,))
        if row:
            last_weights_block, last_weights_epoch = int(row[0]), int(row[1])
        row = _one(log, "SELECT json_extract(body, '$.epoch'), coalesce(json_extract(body, '$.winner'), '') FROM events"
                        " WHERE origin_id = ? AND kind = 'epoch_scored' ORDER BY origin_seq DESC LIMIT 1", (oid,))
        if row:
            last_scored, winner = int(row[0]), str(row[1])
    saved = log.get_state(FOLD_CHECKPOINT)
    folded = msgspec.msgpack.decode(saved, type=_FoldPosition).last_seq if saved else 0
    last = log.last_seq()
    names = sorted(set(peers) | set(published or {}) | {o for o in log.origins() if o != own})
    peer_facts = tuple(
        PeerFact(hotkey=p, imported=log.head(p).origin_seq, published=(published or {}).get(p, -1),
                 problem=(peer_problems or {}).get(p, ""))
        for p in names if p != own
    )
    return Facts(
        own=own, log_head=log.head(own).origin_seq, uploaded_head=uploaded_position(log, own), log_rows=last,
        projection_lag=max(0, last - folded),
        tasks_sampled=log.count(kind="task_closed", origin=own),
        judge_failures=log.count(kind="judge_failed", origin=own),
        rejected_peer_objects=log.count(kind="peer_segment_rejected", origin=own),
        responses=responses, peers=peer_facts, chain_head=chain_head, last_weights_block=last_weights_block,
        last_weights_epoch=last_weights_epoch, last_scored_epoch=last_scored, last_winner=winner,
        started_block=started_block, tempo=tempo, loops=tuple(loops), epoch_length=epoch_length,
        overdue_epochs=overdue_epochs,
    )


def health(facts: Facts) -> tuple[bool, list[str]]:
    """Whether the validator is healthy, and every reason it is not.

    Unhealthy: a loop is not running or stalled; the weights are late by more than
    `OVERDUE_TEMPOS` tempos (alarming at one tempo would page on normal jitter).
    """
    problems: list[str] = []
    for loop in facts.loops:
        if not loop.running:
            problems.append(f"loop {loop.name} is not running")
        elif loop.stalled:
            problems.append(f"loop {loop.name} has not finished a round in too long (stalled)")
    since = facts.blocks_since_weights
    limit = OVERDUE_TEMPOS * max(1, facts.tempo)
    if since is not None and since > limit:
        problems.append(f"weights not set for {since} blocks (more than {OVERDUE_TEMPOS} tempos = {limit} blocks)")
    if facts.weights_overdue:
        problems.append(f"weights overdue: no decision has landed on chain for {facts.epochs_without_weights} epochs "
                        f"(more than {facts.overdue_epochs}, LEOMA_WEIGHTS_OVERDUE_EPOCHS); see `leoma events tail "
                        "--kind weights_refused` and `--kind weights_not_landed` for why")
    return not problems, problems


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `render_prometheus`'s output (prometheus_client's text format 0.0.4)."""


class _Families:
    """The facts as prometheus_client metric families, collected once by a throw-away registry.

    A fresh registry per render (rather than process-global gauges) keeps `render_prometheus` a
    function of its `facts`: two services in one process, or two tests, never share a sample.
    """

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render_prometheus(facts: Facts, *, now: float | None = None) -> str:
    """The facts in the Prometheus text exposition format (version 0.0.4), by prometheus_client."""
    collector = _Families()

    def metric(name: str, kind: str, help_: str, samples: Iterable[tuple[Mapping[str, str], float | int]]) -> None:
        rows = list(samples)
        labels = list(rows[0][0]) if rows else []
        family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_, labels=labels)
        for values, value in rows:
            family.add_metric([values[k] for k in labels], value)
        collector.families.append(family)

    now = time.time() if now is None else now
    healthy, _ = health(facts)
    metric("leoma_log_head", "gauge", "Own events in the local log (origin_seq of the head).", [({}, facts.log_head)])
    metric("leoma_mirror_uploaded_head", "gauge", "Own events published to the own bucket.", [({}, facts.uploaded_head)])
    metric("leoma_mirror_lag_events", "gauge", "Own events not yet published.", [({}, facts.mirror_lag)])
    metric("leoma_peer_imported_head", "gauge", "Events of each peer imported into the local log.",
           [({"peer": p.hotkey}, p.imported) for p in facts.peers])
    metric("leoma_peer_published_head", "gauge", "Events each peer's checkpoint says it published (-1: unknown).",
           [({"peer": p.hotkey}, p.published) for p in facts.peers])
    metric("leoma_peer_objects_rejected_total", "counter", "Peer objects refused (peer_segment_rejected).",
           [({}, facts.rejected_peer_objects)])
    metric("leoma_projection_lag_events", "gauge", "Log rows not yet folded into the epoch projection.",
           [({}, facts.projection_lag)])
    if facts.chain_head is not None:
        metric("leoma_chain_head_block", "gauge", "The chain head as last read.", [({}, facts.chain_head)])
    since = facts.blocks_since_weights
    if since is not None:
        metric("leoma_blocks_since_weights_set", "gauge",
               "Blocks since this validator's weights were last confirmed on chain (since start when never).",
               [({}, since)])
    epochs = facts.epochs_without_weights
    if epochs is not None:
        metric("leoma_weights_epochs_since_landed", "gauge",
               "Epochs since the newest decision that landed on chain (confirmed by read-back).", [({}, epochs)])
        metric("leoma_weights_overdue", "gauge",
               "1 when more than LEOMA_WEIGHTS_OVERDUE_EPOCHS epochs went by without a decision landing.",
               [({}, int(facts.weights_overdue))])
    if facts.last_scored_epoch is not None:
        metric("leoma_last_scored_epoch", "gauge", "The newest epoch this validator decided.",
               [({}, facts.last_scored_epoch)])
    metric("leoma_tasks_sampled_total", "counter", "Tasks this validator sampled and closed.", [({}, facts.tasks_sampled)])
    metric("leoma_miner_responses_total", "counter", "Miner responses recorded, by status.",
           [({"status": k}, v) for k, v in sorted(facts.responses.items())])
    metric("leoma_judge_failures_total", "counter", "Judge calls that gave no verdict.", [({}, facts.judge_failures)])
    metric("leoma_loop_up", "gauge", "1 while a supervised loop is running.",
           [({"loop": lp.name}, int(lp.running and not lp.stalled)) for lp in facts.loops])
    metric("leoma_loop_last_beat_seconds", "gauge", "Seconds since each loop last finished a round (-1: never).",
           [({"loop": lp.name}, round(now - lp.last_beat, 3) if lp.last_beat else -1) for lp in facts.loops])
    metric("leoma_loop_restarts_total", "counter", "Times each loop restarted after an exception.",
           [({"loop": lp.name}, lp.restarts) for lp in facts.loops])
    metric("leoma_healthy", "gauge", "1 when /healthz passes.", [({}, int(healthy))])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode("utf-8")
