"""Gate verdicts from recorded measurements: which gate a miner's video failed, and copies.

Pure: `GateMeasurements` (what `leoma.adapters.gates.measure` recorded in `MinerResponded.gates`) plus
the consensus in, a reason out. Replay re-derives every gate verdict with these functions.

Reasons, checked in this order (the first failure decides):

    gate:decode        a frame did not decode, or fewer frames than the container declares
    gate:codec         not one of `gates.codecs`
    gate:frame_count   fewer than `gates.min_frames` or more than `gates.max_frames`
    gate:fps           not `request.fps` within `gates.fps_tolerance_milli`
    gate:duration      outside `gates.min_duration_ms`..`gates.max_duration_ms`
    gate:resolution    the seed's rule (`video.required_*` within `video.resolution_tolerance`)
    gate:first_frame   first frame further from the conditioning image than `min_first_frame_psnr_cdb`
    gate:frozen        closer to "repeat the first frame" than `min_motion_c`
    gate:hard_cut      a consecutive-frame scene score above `max_cut_milli`
    returned_source_clip  the later frames are the source clip's (`source_max_bits`)

and across the miners of one task, `copied_output:<uid>` for the later committer of two
near-identical outputs (`copies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from leoma.log.consensus import Consensus
from leoma.log.events import GateMeasurements, MinerResponded, VerdictRecorded

__all__ = ["CopyCandidate", "copies", "gate_reason", "output_distance", "rederive"]


def gate_reason(m: GateMeasurements, consensus: Consensus) -> str:
    """The first gate `m` fails under `consensus`, or `""` when the video may go to the judge."""
    g, v, r = consensus.gates, consensus.video, consensus.request
    if not m.decoded:
        return "gate:decode"
    if m.codec not in g.codecs.split():
        return "gate:codec"
    if not g.min_frames <= m.frames <= g.max_frames:
        return "gate:frame_count"
    if abs(m.fps_milli - r.fps * 1000) > g.fps_tolerance_milli:
        return "gate:fps"
    if not g.min_duration_ms <= m.duration_ms <= g.max_duration_ms:
        return "gate:duration"
    tol = v.resolution_tolerance
    if abs(m.width - v.required_width) > tol or abs(m.height - v.required_height) > tol:
        return "gate:resolution"
    if m.first_frame_psnr_cdb < g.min_first_frame_psnr_cdb:
        return "gate:first_frame"
    if m.motion_c < g.min_motion_c:
        return "gate:frozen"
    if m.max_cut_milli > g.max_cut_milli:
        return "gate:hard_cut"
    if 0 <= m.source_distance <= g.source_max_bits:
        return "returned_source_clip"
    return ""


class CopyCandidate(NamedTuple):
    """One miner's output in a task, with its seniority (earlier commit first, then lower uid)."""

    miner: str
    uid: int
    commit_block: int
    hashes: tuple[str, ...]


def output_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Mean Hamming distance of two outputs' sampled-frame hashes, frame by frame (rounded)."""
    n = min(len(a), len(b))
    if n == 0 or len(a) != len(b):
        return 1 << 16  # not comparable: never a copy
    total = sum((int(x, 16) ^ int(y, 16)).bit_count() for x, y in zip(a, b))
    return (total + n // 2) // n


def copies(candidates: Iterable[CopyCandidate], max_bits: int) -> dict[str, tuple[int, int]]:
    """Miners whose output is near-identical to an earlier committer's: miner -> (earlier uid, distance).

    The earliest committer of a group keeps its output; each later one is a copy of the earliest
    earlier miner it matches.
    """
    ordered = sorted(candidates, key=lambda c: (c.commit_block, c.uid, c.miner))
    out: dict[str, tuple[int, int]] = {}
    for i, later in enumerate(ordered):
        for earlier in ordered[:i]:
            d = output_distance(earlier.hashes, later.hashes)
            if d <= max_bits:
                out[later.miner] = (earlier.uid, d)
                break
    return out


GATE_REASONS = ("gate:", "returned_source_clip", "copied_output:")


def rederive(responses: Iterable[MinerResponded], verdicts: Iterable[VerdictRecorded],
             seniority: Mapping[str, tuple[int, int]], consensus: Consensus) -> list[str]:
    """Re-derive one task's gate and copy verdicts from the recorded measurements.

    `seniority` is miner -> (commit_block, uid) as the sampler's miner checks said. Returns one
    line per verdict that the measurements do not reproduce (empty: every one reproduced).
    """
    by_miner = {r.miner: r for r in responses}
    problems: list[str] = []
    accepted = []
    for miner, r in sorted(by_miner.items()):
        if r.gates is None:
            continue
        expected = gate_reason(r.gates, consensus)
        if r.reason.startswith(GATE_REASONS[:2]) or expected:
            if expected != r.reason:
                problems.append(f"{miner}: recorded {r.reason!r}, measurements give {expected!r}")
        if r.status == "accepted" and r.gates.hashes:
            commit_block, uid = seniority.get(miner, (1 << 62, -1))
            accepted.append(CopyCandidate(miner, uid, commit_block, r.gates.hashes))
    found = {m: f"copied_output:{uid}" for m, (uid, _) in copies(accepted, consensus.gates.copy_max_bits).items()}
    for v in verdicts:
        want = found.get(v.miner) or (by_miner[v.miner].reason if v.miner in by_miner else "")
        if v.reason.startswith(GATE_REASONS) or v.miner in found:
            if v.reason != want:
                problems.append(f"{v.miner}: verdict {v.reason!r}, measurements give {want!r}")
    return problems
