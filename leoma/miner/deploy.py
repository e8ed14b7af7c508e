"""Deploying a miner's model (`leoma miner push`): check it as a validator would, `chutes deploy` the
rendered chute, then find the new chute's id so the miner can commit it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from leoma.errors import ConfigError
from leoma.miner.chute import preflight, render_chute

__all__ = [
    "DeployResult",
    "PushResult",
    "deploy",
    "find_chute_id",
    "log_error_line",
    "push",
]

# A Chutes CLI log line: `2026-01-14 14:43:26.979 | ERROR    | module:fn:12 - message`.
_LOG_LINE = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) \| (\w+)\s*\|(.*)")


class DeployResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `chutes deploy` did: its exit code, the first ERROR line (if any) and its output."""

    ok: bool
    exit_code: int
    error: str = ""
    output: str = ""


def log_error_line(output: str) -> str:
    """The message of the first ERROR/CRITICAL log line in Chutes CLI output ("" if none)."""
    for line in output.splitlines():
        m = _LOG_LINE.search(line)
        if m and m.group(2).upper() in ("ERROR", "CRITICAL"):
            return m.group(3).strip().lstrip("- ").strip() or line.strip()
    return ""


def deploy(source: str, api_key: str, *, executable: str = "chutes", timeout: float = 3600.0,
           env: Mapping[str, str] | None = None) -> DeployResult:
    """Write `source` as a module in a fresh temporary folder and `chutes deploy` it.

    The folder (never the current directory) is removed afterwards. A non-zero exit or an
    ERROR line in the output is a failure (the Chutes CLI sometimes logs an error and exits 0).
    """
    found = shutil.which(executable, path=(env or os.environ).get("PATH"))
    if found is None:
        raise ConfigError(f"the {executable!r} command is not installed: `pip install chutes` and register with "
                          "`chutes register`, or deploy the rendered app yourself")
    with tempfile.TemporaryDirectory(prefix="leoma-chute-") as folder:
        module = "leoma_chute"
        Path(folder, f"{module}.py").write_text(source, encoding="utf-8")
        child_env = {**(env if env is not None else os.environ), "CHUTES_API_KEY": api_key}
        try:
            proc = subprocess.run(
                [found, "deploy", f"{module}:chute", "--accept-fee"], cwd=folder, env=child_env, input="y\n",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            return DeployResult(ok=False, exit_code=-1, error=f"chutes deploy did not finish in {timeout:g}s")
    output = proc.stdout or ""
    error = log_error_line(output)
    if error:
        return DeployResult(ok=False, exit_code=proc.returncode, error=f"chutes deploy logged an error: {error}",
                            output=output)
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-1:] or [""]
        return DeployResult(ok=False, exit_code=proc.returncode,
                            error=f"chutes deploy exited with code {proc.returncode}: {tail[0]}".rstrip(": "),
                            output=output)
    return DeployResult(ok=True, exit_code=0, output=output)


async def find_chute_id(chutes: Any, model_name: str) -> str | None:
    """The id of the newest chute whose name, tagline or readme is `model_name`, or None."""
    items = await chutes.list_chutes()
    # Newest first: by `created_at` when the API gives it, else the listing's order reversed (the seed's).
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (str(p[1].get("created_at") or ""), p[0]), reverse=True)
    for _, item in indexed:
        if model_name in (item.get("name"), item.get("tagline"), item.get("readme")) and item.get("chute_id"):
            return str(item["chute_id"])
    return None


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of `push`; `commit_command` is what to run next."""

    success: bool
    model_name: str
    model_revision: str
    hotkey: str
    model_hash: str = ""
    chute_id: str = ""
    error: str = ""
    commit_command: str = ""


async def push(
    model_name: str,
    model_revision: str,
    *,
    hotkey: str,
    chute_user: str,
    api_key: str,
    chutes: Any,
    hub: Any,
    executable: str = "chutes",
    timeout: float = 3600.0,
    env: Mapping[str, str] | None = None,
) -> PushResult:
    """Check, render, deploy and find the chute id; never deploys what validators would reject.

    Raises `LeomaError` (with the reason) for refusals before deploying; a failed deploy or a
    chute that cannot be found comes back as `success=False` with `error`.
    """
    if not api_key:
        raise ConfigError("CHUTES_API_KEY is not set: give --chutes-api-key or set CHUTES_API_KEY")
    if not chute_user.strip():
        raise ConfigError("the Chutes username is not set: give --chute-user or set CHUTE_USER")
    model_hash = await preflight(model_name, model_revision, hotkey, hub)
    name, revision = model_name.strip(), model_revision.strip()
    base = dict(model_name=name, model_revision=revision, hotkey=hotkey, model_hash=model_hash)
    source = render_chute(name, revision, chute_user.strip())
    result = await asyncio.to_thread(deploy, source, api_key, executable=executable, timeout=timeout, env=env)
    if not result.ok:
        return PushResult(success=False, error=result.error, **base)
    try:
        chute_id = await find_chute_id(chutes, name)
    except Exception as exc:  # httpx raises several kinds; all mean the listing could not be read
        return PushResult(success=False, error=f"deployed, but the Chutes API listing failed: {exc}", **base)
    if not chute_id:
        return PushResult(success=False, error=f"deployed, but no chute named {name} is listed by the Chutes API yet; "
                          "look it up with `chutes chutes list` and commit it", **base)
    command = (f"leoma miner commit --model-name {name} --model-revision {revision} --chute-id {chute_id}")
    return PushResult(success=True, chute_id=chute_id, commit_command=command, **base)
