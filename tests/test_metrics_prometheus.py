"""`/metrics` is written by prometheus_client and read back here by prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from leoma.ops.metrics import Facts, LoopFact, PeerFact, render_prometheus

NOW = 1_000_000.0


def _facts(**changes: object) -> Facts:
    base: dict[str, object] = dict(
        own="5Own", log_head=10, uploaded_head=7, log_rows=30, projection_lag=2, tasks_sampled=3, judge_failures=1,
        responses={"accepted": 5, "failed/miner": 2, "failed/infra": 0}, chain_head=5000, last_weights_block=4900,
        tempo=100, epoch_length=100, last_weights_epoch=48, rejected_peer_objects=4, last_scored_epoch=49,
        peers=(PeerFact(hotkey='5Peer"odd\\name', imported=6, published=9),),
        loops=(LoopFact(name="sampler", running=True, last_beat=NOW - 2.5, restarts=1),
               LoopFact(name="weights", running=False)))
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


def _parse(text: str) -> tuple[dict[str, str], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    kinds: dict[str, str] = {}
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return kinds, samples


def test_every_fact_is_a_sample_with_its_value_and_type() -> None:
    kinds, samples = _parse(render_prometheus(_facts(), now=NOW))
    expected = {
        ("leoma_log_head", ()): 10, ("leoma_mirror_uploaded_head", ()): 7, ("leoma_mirror_lag_events", ()): 3,
        ("leoma_peer_imported_head", (("peer", '5Peer"odd\\name'),)): 6,
        ("leoma_peer_published_head", (("peer", '5Peer"odd\\name'),)): 9,
        ("leoma_peer_objects_rejected_total", ()): 4, ("leoma_projection_lag_events", ()): 2,
        ("leoma_chain_head_block", ()): 5000, ("leoma_blocks_since_weights_set", ()): 100,
        ("leoma_weights_epochs_since_landed", ()): 2, ("leoma_weights_overdue", ()): 0,
        ("leoma_last_scored_epoch", ()): 49, ("leoma_tasks_sampled_total", ()): 3,
        ("leoma_miner_responses_total", (("status", "accepted"),)): 5,
        ("leoma_miner_responses_total", (("status", "failed/infra"),)): 0,
        ("leoma_miner_responses_total", (("status", "failed/miner"),)): 2,
        ("leoma_judge_failures_total", ()): 1,
        ("leoma_loop_up", (("loop", "sampler"),)): 1, ("leoma_loop_up", (("loop", "weights"),)): 0,
        ("leoma_loop_last_beat_seconds", (("loop", "sampler"),)): 2.5,
        ("leoma_loop_last_beat_seconds", (("loop", "weights"),)): -1,
        ("leoma_loop_restarts_total", (("loop", "sampler"),)): 1,
        ("leoma_loop_restarts_total", (("loop", "weights"),)): 0,
        ("leoma_healthy", ()): 0,  # the weights loop is not running
    }
    assert samples == expected
    assert kinds["leoma_log_head"] == "gauge" and kinds["leoma_loop_up"] == "gauge"
    # the parser strips `_total` from a counter family's name; the samples keep it
    assert kinds["leoma_tasks_sampled"] == kinds["leoma_miner_responses"] == "counter"


def test_optional_facts_are_left_out_rather_than_zero() -> None:
    _, samples = _parse(render_prometheus(_facts(chain_head=None, last_scored_epoch=None, peers=(), loops=()), now=NOW))
    names = {name for name, _ in samples}
    assert not names & {"leoma_chain_head_block", "leoma_blocks_since_weights_set", "leoma_weights_overdue",
                        "leoma_last_scored_epoch", "leoma_peer_imported_head", "leoma_loop_up"}
    assert samples[("leoma_healthy", ())] == 1
