"""One retry policy for every adapter: tenacity, exponential back-off, always with jitter.

Each adapter asks for its policy by name; the counts and waits are the adapter's own settings
(from the environment, the consensus or the constructor), so this module decides only *how*
Leoma retries, never *how often*:

    install_s3_policy   S3 requests: botocore's own standard retry mode, with this back-off
    storage_policy      an S3 body that broke mid-stream (after the request itself succeeded)
    chutes_policy       the chute gateway's 429/5xx, within a time budget and the call's deadline
    judge_policy        Gemini calls, `attempts` from the consensus, a pause between them
    chain_policy        a dropped connection to the chain: reconnect, try once more
    restart_policy      a supervised loop that crashed (serve): back off until it runs again
    restore_policy      the own bucket unreadable at start (serve): back off until it answers

Every wait is jittered, so validators that fail together do not retry together. Every policy
takes `sleep` (default `asyncio.sleep`) and `rng`, so a test counts attempts without sleeping
and checks each wait against its bounds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity
from tenacity import AsyncRetrying, RetryCallState

__all__ = [
    "Backoff", "Sleep", "chain_policy", "chutes_policy", "install_s3_policy", "judge_policy",
    "restart_policy",
    "restore_policy", "storage_policy",
]

log = logging.getLogger("leoma.adapters.retry")

Sleep = Callable[[float], Awaitable[Any]]
"""What waits between attempts: `asyncio.sleep`, or a test's recorder, or a stop-aware sleep."""


class Backoff(tenacity.wait.wait_base):
    """Exponential back-off with jitter: the wait before attempt n+1 after n failures.

    `ceiling(n) = min(cap, base * 2**(n-1))`; the wait is uniform in
    `[floor * min(ceiling(n), floor_cap), ceiling(n)]` (`floor=0`: "full jitter").
    """

    def __init__(self, base: float, cap: float, *, floor: float = 0.0, floor_cap: float = float("inf"),
                 rng: random.Random | None = None) -> None:
        if base < 0 or cap < 0 or not 0 <= floor <= 1:
            raise ValueError(f"back-off needs base >= 0, cap >= 0 and 0 <= floor <= 1, not {base}, {cap}, {floor}")
        self.base, self.cap, self.floor, self.floor_cap = base, cap, floor, floor_cap
        self.rng = rng or random.Random()

    def ceiling(self, failures: int) -> float:
        """The longest wait after `failures` failures in a row."""
        return min(self.cap, self.base * 2 ** min(max(failures, 1) - 1, 62))

    def delay(self, failures: int) -> float:
        """One jittered wait after `failures` failures in a row."""
        high = self.ceiling(failures)
        return self.rng.uniform(self.floor * min(high, self.floor_cap), high)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s: attempt %d failed (%s: %s); retrying in %.2fs", what, state.attempt_number,
                    type(exc).__name__, exc, wait)

    return before_sleep


def _policy(*, retry_on: Callable[[BaseException], bool], stop: Any, wait: tenacity.wait.wait_base,
            sleep: Sleep | None, before_sleep: Callable[[RetryCallState], None] | None) -> AsyncRetrying:
    return AsyncRetrying(
        retry=tenacity.retry_if_exception(retry_on), stop=stop, wait=wait, sleep=sleep or asyncio.sleep,
        before_sleep=before_sleep, reraise=True,  # callers see the adapter's own last error, not RetryError
    )


def storage_policy(*, attempts: int, base: float, cap: float, retry_on: Callable[[BaseException], bool],
                   what: str, sleep: Sleep | None = None, rng: random.Random | None = None) -> AsyncRetrying:
    """Up to `attempts` tries with full jitter (`uniform(0, min(cap, base * 2**(n-1)))`)."""
    return _policy(retry_on=retry_on, stop=tenacity.stop_after_attempt(attempts), wait=Backoff(base, cap, rng=rng),
                   sleep=sleep, before_sleep=_log_retry(what))


def chutes_policy(*, base: float, budget_ends: Callable[[float], bool], retry_on: type[BaseException],
                  sleep: Sleep | None = None, rng: random.Random | None = None) -> AsyncRetrying:
    """Retry `retry_on` while the next wait still ends before the budget: `budget_ends(wait)` says no.

    The wait after n failures is `base * 2**(n-1)` times a factor uniform in [0.5, 1.5]
    (the mean is kept, the phase is spread).
    """
    backoff = Backoff(1.5 * base, float("inf"), floor=1 / 3, rng=rng)

    def out_of_budget(state: RetryCallState) -> bool:
        return budget_ends(state.upcoming_sleep)

    return _policy(retry_on=lambda exc: isinstance(exc, retry_on), stop=out_of_budget, wait=backoff, sleep=sleep,
                   before_sleep=None)


def judge_policy(*, attempts: int, pause: float, what: str, sleep: Sleep | None = None,
                 rng: random.Random | None = None) -> AsyncRetrying:
    """Up to `attempts` tries of a judge call; between them a pause uniform in [pause/2, 3*pause/2].

    Any exception is retried: google-genai raises several unrelated types, and a malformed
    reply is worth asking again.
    """
    wait = Backoff(1.5 * pause, 1.5 * pause, floor=1 / 3, rng=rng)
    return _policy(retry_on=lambda exc: isinstance(exc, Exception), stop=tenacity.stop_after_attempt(attempts),
                   wait=wait, sleep=sleep, before_sleep=_log_retry(what))


def chain_policy(*, attempts: int, retry_on: Callable[[BaseException], bool], pause: float,
                 sleep: Sleep | None = None, before_sleep: Callable[[RetryCallState], None] | None = None,
                 rng: random.Random | None = None) -> AsyncRetrying:
    """Reconnect after a dropped connection and try again, up to `attempts` in all; a jittered pause
    (uniform in [0, pause]) first, so validators cut off together do not reconnect together."""
    return _policy(retry_on=retry_on, stop=tenacity.stop_after_attempt(attempts), wait=Backoff(pause, pause, rng=rng),
                   sleep=sleep, before_sleep=before_sleep)


def restart_policy(*, interval: float, cap: float, stopped: Callable[[], bool], sleep: Sleep,
                   before_sleep: Callable[[RetryCallState], None], rng: random.Random | None = None) -> AsyncRetrying:
    """Run a crashed loop's round again until it succeeds or `stopped()`.

    After n failures in a row the wait is uniform in `[min(interval, c)/2, c]` with
    `c = min(cap, interval * 2**n)`, so a crash loop never spins and never waits in step.
    """
    backoff = Backoff(2 * interval, cap, floor=0.5, floor_cap=interval, rng=rng)
    return _policy(retry_on=lambda exc: isinstance(exc, Exception), stop=lambda _s: stopped(), wait=backoff,
                   sleep=sleep, before_sleep=before_sleep)


def restore_policy(*, retry_on: type[BaseException], stopped: Callable[[], bool], sleep: Sleep,
                   before_sleep: Callable[[RetryCallState], None], cap: float = 60.0,
                   rng: random.Random | None = None) -> AsyncRetrying:
    """Retry `retry_on` until it succeeds or `stopped()`; waits uniform in `[c/2, c]`, `c = min(cap, 2**n)`."""
    backoff = Backoff(2.0, cap, floor=0.5, rng=rng)
    return _policy(retry_on=lambda exc: isinstance(exc, retry_on), stop=lambda _s: stopped(), wait=backoff,
                   sleep=sleep, before_sleep=before_sleep)


class _S3Conditions:
    """botocore's standard conditions (5xx, throttling codes, timeouts, dropped connections), plus
    any 429 and the codes the caller names, within `attempts` in all."""

    def __init__(self, attempts: int, codes: frozenset[str]) -> None:
        from aiobotocore.retries.standard import AioStandardRetryConditions

        self.attempts, self.codes = attempts, codes
        self.standard = AioStandardRetryConditions(max_attempts=attempts)

    async def is_retryable(self, context: Any) -> bool:
        if context.attempt_number >= self.attempts:
            return False
        if await self.standard.is_retryable(context):
            return True
        status = getattr(context.http_response, "status_code", 0) or 0
        return status == 429 or context.get_error_code() in self.codes


class _S3Backoff:
    """Leoma's jittered back-off in botocore's retry handler; logs each retry like every adapter."""

    def __init__(self, backoff: Backoff, attempts: int, what: str, logger: logging.Logger) -> None:
        self.backoff, self.attempts, self.what, self.log = backoff, attempts, what, logger

    def delay_amount(self, context: Any) -> float:
        delay = self.backoff.delay(context.attempt_number)
        status = getattr(context.http_response, "status_code", 0) or 0
        reason = (f"{context.get_error_code() or 'error'} (HTTP {status})" if status
                  else f"{type(context.caught_exception).__name__}: {context.caught_exception}")
        self.log.warning("s3 %s %s attempt=%d/%d failed (%s); retrying in %.2fs", context.operation_model.name,
                         self.what, context.attempt_number, self.attempts, reason, delay)
        return delay


def install_s3_policy(client: Any, *, attempts: int, base: float, cap: float, codes: frozenset[str], what: str,
                      logger: logging.Logger, rng: random.Random | None = None) -> None:
    """Give an aiobotocore client botocore's own standard retry mode with Leoma's back-off.

    The client must be made with `Config(retries={"mode": "standard", "total_max_attempts": attempts})`;
    its handler (botocore's conditions and retry quota) is replaced by the same handler with the
    wait `uniform(0, min(cap, base * 2**(n-1)))`, so the retries happen inside botocore (each
    response says how many in `ResponseMetadata.RetryAttempts`) and tests can make them instant.
    """
    from aiobotocore.retries.standard import AioRetryHandler, AioRetryPolicy
    from botocore.retries.quota import RetryQuota
    from botocore.retries.standard import RetryEventAdapter, RetryQuotaChecker

    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    quota = RetryQuotaChecker(RetryQuota())
    client.meta.events.register(f"after-call.{service}", quota.release_retry_quota)
    handler = AioRetryHandler(
        retry_policy=AioRetryPolicy(retry_checker=_S3Conditions(attempts, codes),
                                    retry_backoff=_S3Backoff(Backoff(base, cap, rng=rng), attempts, what, logger)),
        retry_event_adapter=RetryEventAdapter(), retry_quota=quota,
    )
    client.meta.events.register(f"needs-retry.{service}", handler.needs_retry, unique_id=f"retry-config-{service}")
