"""Benchmark: reading an epoch's weights back (the confirmation), new path against the old one.

    .venv/bin/python tests/benchmarks/bench_weights.py [--validators 64] [--miners 192] [--reads 30]

Builds a simulated chain whose every validator holds a full weight row (validators x miners
pairs), then times, through the real SDK `Client` and `leoma.adapters.chain.Chain`, what one
confirmation reads:

* old (the plainest baseline): the metagraph (to find the uid) and the subnet's whole `Weights`
  map, from which the one row is picked;
* new: the uid (`Uids`), the one `Weights` key and `LastUpdate`, read at one block.

Prints the median milliseconds of each and the ratio new/old. Bounded: a few seconds by default.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def build(root: Path, validators: int, miners: int) -> tuple[str, list[str]]:
    from leoma.adapters.signing import keypair_from_uri
    from leoma.adapters.simchain import SimChain

    owner = keypair_from_uri("//Owner").ss58_address
    sim = SimChain.create(root / "chain.jsonl", owner=owner, clock="manual", netuid=99, weights_rate_limit=0)
    vals = [keypair_from_uri(f"//Validator{i}").ss58_address for i in range(validators)]
    for v in vals:
        sim.register(v, stake=10**11, validator_permit=True)
    for i in range(miners):
        sim.register(keypair_from_uri(f"//Miner{i}").ss58_address)
    dests = list(range(validators, validators + miners))
    for i, v in enumerate(vals):
        _, _, error = sim.submit_extrinsic(v, "SubtensorModule", "set_mechanism_weights", {
            "netuid": 99, "mecid": 0, "dests": dests, "weights": [1 + (i + d) % 65535 for d in dests],
            "version_key": 0})
        assert error is None, error
    return f"sim:{sim.path}", vals


async def measure(network: str, hotkeys: list[str], reads: int) -> dict[str, float]:
    from leoma.adapters.chain import Chain

    async with Chain(network) as chain:
        async def old(hotkey: str) -> int:
            mg = await chain.metagraph(99)
            return len(await chain.weights(99, mg.hotkeys.index(hotkey)))

        async def new(hotkey: str) -> int:
            uid = await chain.uid_of(99, hotkey)
            assert uid is not None
            return len((await chain.weight_row(99, uid)).row)

        out: dict[str, float] = {}
        for name, fn in (("old", old), ("new", new)):
            assert await fn(hotkeys[0]) > 0  # warm the state cache once, as a running validator has it
            times = []
            for i in range(reads):
                started = time.perf_counter()
                await fn(hotkeys[i % len(hotkeys)])
                times.append((time.perf_counter() - started) * 1000)
            out[name] = statistics.median(times)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=64)
    parser.add_argument("--miners", type=int, default=192)
    parser.add_argument("--reads", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        network, hotkeys = build(Path(tmp), args.validators, args.miners)
        built = time.perf_counter() - started
        result = asyncio.run(measure(network, hotkeys, args.reads))
    print(f"chain: {args.validators} validators x {args.miners} miners ({args.validators * args.miners} weight "
          f"pairs), built in {built:.1f}s; {args.reads} confirmations each")
    print(f"old read-back (metagraph + whole Weights map): {result['old']:.2f} ms median")
    print(f"new read-back (Uids + one Weights key + LastUpdate): {result['new']:.2f} ms median")
    print(f"ratio new/old: {result['new'] / result['old']:.3f}")


if __name__ == "__main__":
    main()
