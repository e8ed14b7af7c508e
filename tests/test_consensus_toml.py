"""The devnet writes its consensus as TOML (tomli-w) that reads back to the same digest."""

from __future__ import annotations

import tomllib

import msgspec
import pytest

from leoma.devnet.config import consensus_toml
from leoma.log.consensus import DEFAULT, load_seed_profile, parse_consensus


@pytest.mark.parametrize("consensus", [
    DEFAULT,
    load_seed_profile(),
    msgspec.structs.replace(DEFAULT, window=msgspec.structs.replace(DEFAULT.window, tasks=7, completeness="2/3")),
], ids=["default", "seed-profile", "changed"])
def test_written_toml_parses_back_to_the_same_digest(consensus: object) -> None:
    text = consensus_toml(consensus, comment="written by a test\nsecond line")  # type: ignore[arg-type]
    assert text.startswith("# written by a test\n# second line\n")
    assert tomllib.loads(text) == msgspec.to_builtins(consensus)
    assert parse_consensus(text).digest == consensus.digest  # type: ignore[attr-defined]


def test_a_changed_value_changes_the_digest_read_back() -> None:
    changed = msgspec.structs.replace(DEFAULT, epoch=msgspec.structs.replace(DEFAULT.epoch, length=DEFAULT.epoch.length + 1))
    assert parse_consensus(consensus_toml(changed)).digest != DEFAULT.digest
