"""S3Store overhead against raw aioboto3, both talking to one moto subprocess.

Run: .venv/bin/python tests/benchmarks/bench_storage.py [--objects 200] [--size 100000] [--rounds 3]

For each concurrency, 200 PUTs then 200 GETs of ~100 KB objects go through S3Store and through
bare aioboto3 calls (same botocore Config), alternating which goes first, `rounds` times. Prints
the median ops/s of each and the ratio S3Store / raw (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leoma.adapters.s3 import S3Store  # noqa: E402
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, start_moto  # noqa: E402


async def timed(n: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def run(endpoint: str, objects: int, size: int, rounds: int) -> None:
    import aioboto3
    from botocore.config import Config

    payloads = [os.urandom(size) for _ in range(objects)]
    bucket = "leoma-bench"
    results: dict[tuple[str, str, int], list[float]] = {}
    async with S3Store(
        bucket, endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
        max_pool_connections=16,
    ) as store:
        await store.ensure_bucket()
        config = Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=16,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
        async with session.client("s3", endpoint_url=endpoint, config=config) as raw:

            async def raw_put(i: int, prefix: str) -> None:
                await raw.put_object(Bucket=bucket, Key=f"{prefix}/{i:04d}", Body=payloads[i],
                                     ContentType="application/octet-stream")

            async def raw_get(i: int, prefix: str) -> bytes:
                resp = await raw.get_object(Bucket=bucket, Key=f"{prefix}/{i:04d}")
                async with resp["Body"] as body:
                    data: bytes = await body.read()
                    return data

            async def store_put(i: int, prefix: str) -> None:
                await store.put(f"{prefix}/{i:04d}", payloads[i])

            async def store_get(i: int, prefix: str) -> bytes:
                return await store.get(f"{prefix}/{i:04d}")

            clients = {"raw": (raw_put, raw_get), "S3Store": (store_put, store_get)}
            for concurrency in (1, 8):
                for r in range(rounds):
                    order = ["raw", "S3Store"] if r % 2 == 0 else ["S3Store", "raw"]
                    for name in order:
                        put, get = clients[name]
                        prefix = f"{name}/c{concurrency}/r{r}"
                        results.setdefault((name, "PUT", concurrency), []).append(
                            await timed(objects, concurrency, lambda i, p=prefix, f=put: f(i, p))  # type: ignore[misc]
                        )
                        results.setdefault((name, "GET", concurrency), []).append(
                            await timed(objects, concurrency, lambda i, p=prefix, f=get: f(i, p))  # type: ignore[misc]
                        )

    print(f"{objects} objects of {size} bytes, moto subprocess, median of {rounds} rounds")
    print(f"{'op':<4} {'conc':>4} {'raw ops/s':>10} {'S3Store ops/s':>14} {'ratio':>6}")
    for op in ("PUT", "GET"):
        for concurrency in (1, 8):
            raw_rate = statistics.median(results[("raw", op, concurrency)])
            store_rate = statistics.median(results[("S3Store", op, concurrency)])
            print(f"{op:<4} {concurrency:>4} {raw_rate:>10.0f} {store_rate:>14.0f} {store_rate / raw_rate:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with start_moto() as endpoint:
        asyncio.run(run(endpoint, args.objects, args.size, args.rounds))


if __name__ == "__main__":
    main()
