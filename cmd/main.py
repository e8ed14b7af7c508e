"""The `leoma` command: a thin click layer over the library.

Each area keeps its commands in its own module here with a `register(cli)` function. Those
modules import heavy libraries (bittensor, aioboto3, google-genai) only inside the command
bodies, so `leoma --help` stays fast.
"""

from __future__ import annotations

import importlib

import click

import leoma.adapters.simchain  # noqa: F401 - the composition root plugs the `sim:` network into the chain
from leoma import __version__

# Modules of this package that add commands; each defines `register(cli: click.Group)`.
COMMAND_MODULES: tuple[str, ...] = (
    "events_cmds",
    "chain_cmds",
    "api_cmds",
    "corpus_cmds",
    "miner_cmds",
    "mirror_cmds",
    "scoring_cmds",
    "validator_cmds",
    "serve_cmds",
    "devnet_cmds",
    "preflight_cmds",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="leoma")
def cli() -> None:
    """Leoma: validate, mine and audit a Bittensor subnet for AI video.

    Every observation and decision is an event in a hash-chained log; rankings and weights
    are pure projections of it.
    """


for _name in COMMAND_MODULES:
    importlib.import_module(f"leoma_cmd.{_name}").register(cli)
