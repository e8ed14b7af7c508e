"""A devnet's validators running nothing but their mirror roles go quiet and stay bounded.

The devnet is laid out for real (`Devnet.create`: chain, keys, consensus file, buckets, the
environment `leoma serve` reads) and every validator's log holds what a finished devnet holds
(its allowlist, its own tasks, verdicts and closes, chain heads). Then each runs `Validator`
with only `mirror-out` and `mirror-in`, pushing and pulling every 20 ms: once the peers have
converged, the next hundreds of rounds append no event anywhere, and every bucket's `log/`
stays within 1.5x of its own log compressed once.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from types import SimpleNamespace

from leoma.devnet.config import DevnetConfig
from leoma.devnet.network import Devnet
from leoma.log import events as ev
from leoma.log.consensus import load_consensus
from leoma.log.eventlog import Draft, EventLog
from leoma.mirror.segments import encode_segment
from leoma.ops.config import Settings
from leoma.services.serve import ServeOptions, Validator
from projections.rotation import rightful_sampler_at


def _finished_devnet_log(net: Devnet, name: str, rng: random.Random) -> None:
    """Append what a devnet validator records over a few epochs, with its rightful tasks only."""
    node = net.node(name)
    cfg = net.config
    consensus = load_consensus(net.consensus_path)
    validators = sorted(net.state.allowlist)
    grace = consensus.grace_blocks(cfg.interval)
    miners = tuple(sorted(net.state.miners.values()))
    drafts = [Draft("allowlist", 10, ev.AllowlistVerified(owner_hotkey="owner", digest="d" * 64, interval=cfg.interval,
                                                         validators=tuple(validators)))]
    first = cfg.epoch_length * 100 // cfg.interval
    for task_id in range(first, first + 30):
        block = task_id * cfg.interval + 1
        drafts.append(Draft(f"head/{block}", block, ev.ChainHeadObserved(block_hash=f"0x{rng.getrandbits(256):064x}")))
        if rightful_sampler_at(validators, cfg.interval, grace, task_id, block) != node.hotkey:
            continue
        drafts.append(Draft(f"task/{task_id}", block, ev.TaskOpened(
            task_id=task_id, interval=cfg.interval, sampler=node.hotkey, block_hash=f"0x{rng.getrandbits(256):064x}",
            source_key=f"clips/clip{task_id % 3}.mp4", clip_start_ms=1000, clip_ms=5000,
            prompt="A slow pan across a harbour at dusk, boats rocking gently.", prompt_model="gemini",
            prompt_version="describe/v1", miners=miners)))
        for miner in miners:
            score = rng.randint(40, 95)
            drafts.append(Draft(f"verdict/{task_id}/{miner}", block + 3, ev.VerdictRecorded(
                task_id=task_id, miner=miner, passed=score >= 75, overall=score, judge_model="gemini",
                prompt_version="evaluate/v1", reasoning="Motion is coherent; the first frame matches.")))
        drafts.append(Draft(f"closed/{task_id}", block + 4, ev.TaskClosed(task_id=task_id, evaluated=len(miners))))
    with EventLog(net.db_path(node), own=node.hotkey) as log:
        log.append_many(drafts)


def _own_counts(net: Devnet) -> dict[str, tuple[int, int]]:
    counts = {}
    for node in net.validators:
        with EventLog(net.db_path(node), readonly=True) as log:
            counts[node.name] = (log.count(origin=node.hotkey), log.last_seq())
    return counts


def _converged(net: Devnet) -> bool:
    heads = {}
    for node in net.validators:
        with EventLog(net.db_path(node), readonly=True) as log:
            heads[node.name] = log.frontier()
    return all(h == heads[net.validators[0].name] for h in heads.values()) and len(heads[net.validators[0].name]) == 3


def test_validators_running_only_their_mirror_roles_append_nothing_and_stay_bounded(tmp_path: Path) -> None:
    net = Devnet.create(tmp_path / "net", DevnetConfig())
    # The mirror roles call no miner, judge or hub: the world's addresses only fill the settings.
    net.world = SimpleNamespace(url="http://127.0.0.1:9", generate_url_template="http://127.0.0.1:9/{slug}")
    rng = random.Random(3)
    for node in net.validators:
        net.node_dir(node).mkdir(parents=True, exist_ok=True)
        _finished_devnet_log(net, node.name, rng)

    async def run() -> dict[str, tuple[int, int]]:
        stop = asyncio.Event()
        options = ServeOptions(metrics_addr="off", mirror_interval=0.02, flush_timeout=10.0)
        validators = [Validator(Settings.load(env=net.env(node), dotenv=False), roles=("mirror-out", "mirror-in"),
                                options=options) for node in net.validators]
        rounds = [0] * len(validators)
        for i, v in enumerate(validators):
            def counted(real=v._pull, i=i):  # type: ignore[no-untyped-def]
                rounds[i] += 1
                return real()
            v._pull = counted  # type: ignore[method-assign]
        tasks = [asyncio.create_task(v.run(stop)) for v in validators]
        deadline = time.monotonic() + 60
        while not _converged(net):
            assert time.monotonic() < deadline, "the peers never converged"
            assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
            await asyncio.sleep(0.1)
        before = _own_counts(net)
        start = list(rounds)
        await asyncio.sleep(3.0)  # many rounds of push and pull each
        stop.set()
        assert await asyncio.gather(*tasks) == [0, 0, 0]
        assert all(n - m >= 20 for n, m in zip(rounds, start)), (rounds, start)
        return before

    before = asyncio.run(run())
    assert _own_counts(net) == before  # nothing observed: nothing appended, by anyone
    for node in net.validators:
        with EventLog(net.db_path(node), readonly=True) as log:
            once = len(encode_segment(list(log.chain(node.hotkey))))
            assert log.count(kind="peer_segment_rejected") == 0 and log.count(kind="peer_segment_imported") == 0
        files = [p for p in (net.bucket_path(node) / "log").rglob("*") if p.is_file()]
        stored = sum(p.stat().st_size for p in files)
        assert stored <= 1.5 * once, (node.name, stored, once)
