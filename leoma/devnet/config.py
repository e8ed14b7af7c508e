"""What a devnet is made of: its `DevnetConfig` (validators, miners, timing), the short-interval
consensus every validator of it runs, and the `Progress` its watchers print.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import msgspec

from leoma.errors import ConfigError
from leoma.log.consensus import DEFAULT, Consensus

__all__ = ["DEFAULT_MINERS", "OWNER_URI", "DevnetConfig", "Progress", "consensus_toml", "devnet_consensus", "leoma_executable"]

DEFAULT_MINERS = ("faithful", "static", "noisy", "wrong_resolution", "slow", "copycat",
                  # hostile miners: each refused with its reason (issue 18)
                  "one_frame", "frozen", "corrupt_tail", "slowloris", "proxy_of_faithful", "source_clip",
                  "lone_surrogate")
OWNER_URI = "//Owner"


def leoma_executable() -> str:
    """The `leoma` command of this installation (beside the running interpreter, else on PATH).

    The devnet starts validators and the API as `leoma serve` / `leoma api` processes: it runs the
    command, it does not import the command-line package.
    """
    beside = Path(sys.executable).with_name("leoma")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("leoma")
    if found is None:
        raise ConfigError("the `leoma` command is not installed beside this Python or on PATH: "
                          "install the package (pip install -e .) to run a devnet with processes")
    return found


class DevnetConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of a devnet, tuned so two scored epochs fit in a few minutes on 2 cores."""

    validators: int = 3
    miners: tuple[str, ...] = DEFAULT_MINERS
    netuid: int = 99
    block_time: float = 0.5
    interval: int = 20
    """Blocks per task (rotation interval)."""
    epoch_intervals: int = 4
    window_tasks: int = 8
    settle_margin: int = 2
    clips: int = 3
    frames: int = 17
    slow_seconds: float = 4.0
    request_timeout: float = 2.0
    poll_seconds: float = 1.0
    mirror_seconds: float = 1.0
    wrong_consensus: int = 0
    """Extra validators (not on the allowlist) that run another consensus: peers must refuse them."""
    commit_reveal: bool = False
    """Run the subnet with commit-reveal weights (timelocked commits the chain reveals an epoch later)."""

    @property
    def epoch_length(self) -> int:
        return self.interval * self.epoch_intervals

    @property
    def tempo(self) -> int:
        """The simulated chain's tempo: its epochs are `tempo + 1` blocks, counted from block 0.

        With commit-reveal a commit reveals at the start of the chain epoch after its own. Chain
        epochs of half a validator epoch tile the validators' epochs, so a decision committed in
        the first half of its epoch reveals at its middle (far from the next epoch's commit and
        the rate limit the reveal's `LastUpdate` starts), one committed later at its end, and no
        two epochs' commits ever share a reveal block. With `tempo = epoch_length` (81-block
        chain epochs against 80-block validator epochs) the grids drift: a commit some 20
        blocks late shared its chain epoch with the next epoch's commit, both revealed in one
        block, the later overwrote the earlier, and the earlier decision (a burn before the
        first winner) was never on chain to confirm. Without commit-reveal the tempo is one
        validator epoch (it only sets the weights-overdue threshold of `/healthz`).
        """
        if self.commit_reveal and self.epoch_length % 2 == 0:
            return self.epoch_length // 2 - 1
        return self.epoch_length

    @property
    def start_block(self) -> int:
        """The chain's first block: two tasks before epoch 100, so the first task comes soon after
        the validators are up; with commit-reveal at epoch 100 itself, so the first decision is
        committed early in its epoch (see `tempo`)."""
        return self.epoch_length * 100 - (0 if self.commit_reveal else 2 * self.interval)

class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """One look at the running devnet."""

    block: int
    epoch: int
    turn: str
    """Whose rotation turn it is (validator name)."""
    tasks: int
    verdicts: int
    mirror_lag: int
    scored: dict[str, int]
    """Validator name -> epochs it decided with a winner."""
    judged: int = 0
    """Tasks with at least one verdict (`tasks` counts the closed ones, judged or not)."""
    decided: dict[str, int] = {}
    """Validator name -> the newest epoch it decided (-1: none yet)."""
    target: int = -1
    """The epoch `Devnet.wait` waits for every validator to decide (-1: not known yet)."""


def devnet_consensus(config: DevnetConfig) -> Consensus:
    """The packaged consensus with the devnet's short intervals and small videos."""
    replace = msgspec.structs.replace
    base = DEFAULT
    return replace(
        base,
        rotation=replace(base.rotation, interval=config.interval),
        epoch=replace(base.epoch, length=config.epoch_length),
        window=replace(base.window, tasks=config.window_tasks, settle_margin=config.settle_margin,
                       max_lookback_blocks=0),
        video=replace(base.video, min_source_bytes=1000),
    )


def consensus_toml(consensus: Consensus, *, comment: str = "") -> str:
    """`consensus` as TOML that `load_consensus` reads back to the same digest."""
    import tomli_w

    header = "".join(f"# {line}\n" for line in comment.splitlines()) + "\n"
    return header + tomli_w.dumps(msgspec.to_builtins(consensus))
