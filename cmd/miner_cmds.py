"""Miner commands: deploy to Chutes, see where you stand, run the reference miner.

    leoma miner push             check the model as validators will, deploy its chute, print the chute id
    leoma miner status           commitment, checks, chute, last tasks and rank in one view
    leoma miner serve-reference  the reference miner: the `/generate` contract over plain HTTP

`leoma miner commit` lives in `chain_cmds`; this module adds to the same `miner` group.
Library code is in `leoma.miner`; this is the click layer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from leoma.adapters.wallets import load_wallet, wallet_options
from leoma.errors import ConfigError, LeomaError
from leoma_cmd.output import json_option, print_json, print_table

from .output import subgroup

DEFAULT_CHUTES_API = "https://api.chutes.ai"




def _hotkey(hotkey_ss58: str | None, wallet_name: str | None, wallet_hotkey: str | None,
            wallet_path: str | None) -> str:
    if hotkey_ss58:
        return hotkey_ss58.strip()
    try:
        return str(load_wallet(wallet_name, wallet_hotkey, wallet_path).hotkey.ss58_address)
    except ConfigError as exc:
        raise click.ClickException(f"{exc}; or give your hotkey address with --hotkey-ss58") from None


def _short(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def register(cli: click.Group) -> None:
    """Add `miner push`, `miner status` and `miner serve-reference` (reusing an existing `miner` group)."""
    miner = subgroup(cli, "miner", "Miner tools.")

    @miner.command("push")
    @click.option("--model-name", required=True, help="Hugging Face repo: user/leoma-<your hotkey>.")
    @click.option("--model-revision", required=True, help="Full 40-character commit SHA of the model.")
    @click.option("--chutes-api-key", envvar="CHUTES_API_KEY", default="", help="Chutes API key (env CHUTES_API_KEY).")
    @click.option("--chute-user", envvar="CHUTE_USER", default="", help="Your Chutes username (env CHUTE_USER).")
    @click.option("--chutes-api-url", envvar="CHUTES_API_URL", default=DEFAULT_CHUTES_API, show_default=True,
                  help="Chutes management API (env CHUTES_API_URL).")
    @click.option("--hf-endpoint", envvar="HF_ENDPOINT", default=None,
                  help="Hugging Face endpoint (env HF_ENDPOINT; default huggingface.co).")
    @click.option("--hotkey-ss58", default=None, help="Your hotkey address, instead of reading a wallet here.")
    @click.option("--chutes-bin", default="chutes", show_default=True, help="The Chutes CLI executable.")
    @click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds to wait for the deploy.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @wallet_options
    def push(model_name: str, model_revision: str, chutes_api_key: str, chute_user: str, chutes_api_url: str,
             hf_endpoint: str | None, hotkey_ss58: str | None, chutes_bin: str, timeout: float, as_json: bool,
             wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """Check your model as validators will, deploy its chute, and print the chute id to commit.

        Refuses before deploying anything validators would reject: a repository name that does
        not start with `leoma` and end with your hotkey, a branch or short SHA instead of the full
        commit SHA, a revision Hugging Face does not know, a repository without LFS weights.
        """
        from leoma.adapters.chutes import ChutesClient
        from leoma.adapters.hub import HubClient
        from leoma.miner.deploy import push as do_push

        hotkey = _hotkey(hotkey_ss58, wallet_name, wallet_hotkey, wallet_path)

        async def go() -> Any:
            from leoma.ops.config import environment

            hub = HubClient(endpoint=hf_endpoint or None, token=environment().get("HF_TOKEN") or None)
            async with ChutesClient(api_url=chutes_api_url, api_key=chutes_api_key) as chutes:
                return await do_push(model_name, model_revision, hotkey=hotkey, chute_user=chute_user,
                                     api_key=chutes_api_key, chutes=chutes, hub=hub, executable=chutes_bin,
                                     timeout=timeout)

        try:
            result = asyncio.run(go())
        except LeomaError as exc:
            if as_json:
                print_json({"success": False, "error": str(exc), "model_name": model_name,
                            "model_revision": model_revision, "hotkey": hotkey})
                raise SystemExit(1) from None
            raise click.ClickException(f"refused: {exc}") from None
        if as_json:
            import msgspec

            print_json(msgspec.to_builtins(result))
            if not result.success:
                raise SystemExit(1)
            return
        if not result.success:
            raise click.ClickException(result.error)
        click.echo(f"deployed {result.model_name}@{result.model_revision} as chute {result.chute_id}")
        click.echo(f"weights hash {result.model_hash}")
        click.echo("next, commit it on chain:")
        click.echo(f"  {result.commit_command}")

    @miner.command("status")
    @click.option("--hotkey", "hotkey_ss58", default=None, help="Miner hotkey (SS58); default: your wallet's.")
    @click.option("--db", type=click.Path(dir_okay=False, path_type=Path), envvar="LEOMA_DB", default=None,
                  help="A validator's event log (env LEOMA_DB; default $LEOMA_STATE_DIR/events.db).")
    @click.option("--validator", default=None, help="Only this validator's events in the log (hotkey).")
    @click.option("--network", envvar="NETWORK", default="finney", show_default=True,
                  help="finney, test, local, ws://..., sim:PATH, or 'none' to skip the chain (env NETWORK).")
    @click.option("--netuid", envvar="NETUID", type=int, default=99, show_default=True, help="Subnet id (env NETUID).")
    @click.option("--chutes-api-url", envvar="CHUTES_API_URL", default=DEFAULT_CHUTES_API, show_default=True,
                  help="Chutes management API, or 'none' to skip it (env CHUTES_API_URL).")
    @click.option("--chutes-api-key", envvar="CHUTES_API_KEY", default="", help="Chutes API key (env CHUTES_API_KEY).")
    @click.option("--tasks", "last_tasks", type=click.IntRange(0), default=10, show_default=True,
                  help="How many recent tasks to show.")
    @json_option
    @wallet_options
    def status(hotkey_ss58: str | None, db: Path | None, validator: str | None, network: str, netuid: int,
               chutes_api_url: str, chutes_api_key: str, last_tasks: int, as_json: bool, wallet_name: str | None,
               wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """Where a miner stands: commitment, each check's result, chute, last verdicts, rank.

        Every source is optional: what cannot be read (no chain, no log, no Chutes API) is said,
        and the rest is shown.
        """
        import msgspec

        from leoma.miner.status import miner_status

        hotkey = _hotkey(hotkey_ss58, wallet_name, wallet_hotkey, wallet_path)
        unavailable: dict[str, str] = {}
        from leoma.ops.config import default_db

        db_path = db or Path(default_db())

        async def go() -> Any:
            from leoma.adapters.chutes import ChutesClient
            from leoma.log.eventlog import EventLog
            from leoma.ops.config import environment, resolve_consensus

            # The one rule: LEOMA_CONSENSUS (environment or .env), else the validator log's record.
            consensus = resolve_consensus(environment().get("LEOMA_CONSENSUS", "").strip(), db=db_path)
            log = None
            if db_path.is_file():
                try:
                    log = EventLog(db_path, readonly=True)
                except LeomaError as exc:
                    unavailable["log"] = str(exc)
            else:
                unavailable["log"] = f"no validator log at {db_path} (give --db)"
            chain = None
            if network.strip().lower() in ("", "none"):
                unavailable["chain"] = "skipped (--network none)"
            else:
                try:
                    from leoma.adapters.chain import Chain

                    chain = Chain(network, timeout=20.0)
                except LeomaError as exc:
                    unavailable["chain"] = str(exc)
            chutes = None
            if chutes_api_url.strip().lower() in ("", "none"):
                unavailable["chutes"] = "skipped (--chutes-api-url none)"
            else:
                chutes = ChutesClient(api_url=chutes_api_url, api_key=chutes_api_key)
            try:
                return await miner_status(hotkey, netuid=netuid, chain=chain, log=log, chutes=chutes,
                                          consensus=consensus, validator=validator, last_tasks=last_tasks,
                                          unavailable=unavailable)
            finally:
                if chain is not None:
                    await chain.close()
                if chutes is not None:
                    await chutes.aclose()
                if log is not None:
                    log.close()

        try:
            result = asyncio.run(go())
        except LeomaError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            print_json(msgspec.to_builtins(result))
            return
        _print_status(result)

    @miner.command("serve-reference")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
    @click.option("--behaviour", type=click.Choice(["faithful", "static", "noisy", "wrong_resolution"]),
                  default="faithful", show_default=True, help="Which devnet miner to serve.")
    @click.option("--max-frames", type=click.IntRange(1, 161), default=33, show_default=True,
                  help="Render at most this many frames (a CPU is slow; validators check resolution).")
    def serve_reference(host: str, port: int, behaviour: str, max_frames: int) -> None:
        """Run the reference miner: POST /generate (prompt + first frame) returns an 832x480 mp4.

        The template a new miner starts from: same request fields and answer as the chute that
        `leoma miner push` deploys, with the devnet's faithful miner behind it instead of a model.
        """
        import uvicorn

        from leoma.devnet.world import render_reference_video
        from leoma.miner.reference import reference_app

        try:
            app = reference_app(behaviour, render=render_reference_video, max_frames=max_frames)
        except LeomaError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"reference miner ({behaviour}) on http://{host}:{port}/generate")
        uvicorn.run(app, host=host, port=port, log_level="info")


def _print_status(s: Any) -> None:
    click.echo(f"miner {s.hotkey}")
    click.echo("")
    c = s.commitment
    if c is not None:
        click.echo(f"commitment   block {c.block} (commit #{c.count})  {c.model_name}@{c.model_revision}  "
                   f"chute {c.chute_id or '-'}")
        if c.problem:
            click.echo(f"             rejected by validators: {c.problem}")
    elif "chain" in s.unavailable:
        click.echo(f"commitment   unknown: chain unavailable ({s.unavailable['chain']})")
    else:
        click.echo("commitment   none on chain")
    ch = s.chute
    if ch is not None:
        state = ("hot" if ch.hot else "cold") if ch.reachable else "unknown (the Chutes API did not answer)"
        click.echo(f"chute        {ch.chute_id}  {state}  {('slug ' + ch.slug) if ch.slug else ''}".rstrip())
    elif "chutes" in s.unavailable:
        click.echo(f"chute        unknown: {s.unavailable['chutes']}")
    chk = s.check
    if chk is not None:
        verdict = "valid" if chk.valid else f"invalid: {chk.invalid_reason}"
        click.echo(f"last check   block {chk.block} by {chk.validator}: {verdict}")
        if chk.steps:
            print_table(["check", "ok", "detail"],
                        [[st.name, "yes" if st.ok else "NO", _short(st.detail, 80)] for st in chk.steps])
    elif "log" in s.unavailable:
        click.echo(f"last check   unknown: {s.unavailable['log']}")
    else:
        click.echo("last check   none recorded in this log")
    click.echo("")
    if s.tasks:
        click.echo("last tasks")
        print_table(
            ["task", "validator", "reply", "latency", "verdict", "overall", "reasoning"],
            [[t.task_id, t.validator[:12], (t.response + (f" ({t.failure_class}: {_short(t.detail, 40)})"
                                                          if t.failure_class else "")) or "-",
              f"{t.latency_ms} ms" if t.latency_ms else "", t.verdict or "pending", t.overall or "",
              _short(t.reasoning, 60)] for t in s.tasks],
        )
        click.echo("")
    r = s.rank
    if r is not None:
        how = "recorded" if r.source == "epoch_scored" else "computed now from the log"
        place = f"rank {r.rank}" if r.rank else "unranked"
        click.echo(f"epoch {r.epoch} ({how}, {r.validator[:12]})  winner {r.winner or '(burn)'}  you: {place}, "
                   f"rate {r.avg_rate}, completeness {r.completeness}"
                   + ("" if r.eligible else f", not eligible: {r.reason}"))
        if r.earlier:
            click.echo(f"to dominate the miners committed before you, you need a rate of {r.needed_rate}")
            print_table(["earlier miner", "rate", "needed", "beaten"],
                        [[e.hotkey, e.rate, e.needed, "yes" if e.beaten else "no"] for e in r.earlier])
        else:
            click.echo("no eligible miner committed before you: you keep the crown unless a later miner dominates")
        click.echo("")
    for source, why in s.unavailable.items():
        click.echo(f"({source} unavailable: {why})")
    click.echo(f"next: {s.next_step}")
