"""Hugging Face model metadata (huggingface_hub): a model's weights hash and resolved revision.

The weights hash identifies a model by the sha256 of its LFS weight files, so two miners who
commit the same weights under different repos are found as duplicates. Successes are cached for
an hour; failures only briefly (the seed cached a failure for an hour, so one hiccup of the Hub
made a miner invalid for an hour).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable, Iterable

from leoma.errors import AdapterError

__all__ = ["WEIGHT_SUFFIXES", "HubClient", "hash_weight_shas"]

log = logging.getLogger("leoma.adapters.hub")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def hash_weight_shas(shas: Iterable[str]) -> str:
    """sha256 hex of the sorted, de-duplicated LFS sha256s joined with no separator."""
    return hashlib.sha256("".join(sorted(set(shas))).encode("utf-8")).hexdigest()


def _weights_from_info(info: Any, repo_id: str, revision: str) -> tuple[str, str]:
    sha = getattr(info, "sha", None)
    shas = set()
    for sibling in getattr(info, "siblings", None) or []:
        name = getattr(sibling, "rfilename", "") or ""
        lfs = getattr(sibling, "lfs", None)
        digest = getattr(lfs, "sha256", None) if lfs is not None else None
        if name.endswith(WEIGHT_SUFFIXES) and digest:
            shas.add(str(digest))
    if not sha:
        raise AdapterError(f"Hugging Face gave no commit sha for {repo_id}@{revision}")
    if not shas:
        raise AdapterError(
            f"{repo_id}@{revision} has no LFS weight files ({', '.join(WEIGHT_SUFFIXES)}): nothing to hash"
        )
    return hash_weight_shas(shas), str(sha)


class HubClient:
    """`model_hash(repo, revision)` with an hour's cache for answers and a short one for failures."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        ttl: float = 3600.0,
        failure_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, tuple[str, str] | AdapterError]] = {}
        self._api: Any = None
        self.requests = 0

    def _client(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            # token=False: send no Authorization header and never read a token from this machine.
            self._api = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api

    def _fetch(self, repo_id: str, revision: str) -> tuple[str, str]:
        self.requests += 1
        try:
            info = self._client().repo_info(
                repo_id=repo_id, repo_type="model", revision=revision, files_metadata=True
            )
        except Exception as exc:  # the Hub client raises many kinds; all mean "could not read it"
            raise AdapterError(f"Hugging Face lookup of {repo_id}@{revision} failed: {type(exc).__name__}: {exc}") from exc
        return _weights_from_info(info, repo_id, revision)

    async def model_hash(self, repo_id: str, revision: str) -> tuple[str, str]:
        """(weights hash, resolved commit sha) of `repo_id` at `revision`.

        Raises `AdapterError` saying why (unreachable, unknown repo or revision, no weights).
        """
        key = (repo_id, revision)
        hit = self._cache.get(key)
        now = self._clock()
        if hit and hit[0] > now:
            if isinstance(hit[1], AdapterError):
                raise hit[1]
            return hit[1]
        try:
            result = await asyncio.to_thread(self._fetch, repo_id, revision)
        except AdapterError as exc:
            log.warning("%s", exc)
            self._cache[key] = (self._clock() + self.failure_ttl, exc)
            raise
        self._cache[key] = (self._clock() + self.ttl, result)
        return result
