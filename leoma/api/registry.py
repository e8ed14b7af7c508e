"""The owner's validator registry rules, shared by `POST /validators` and `leoma db add-validator`.

One uid belongs to one validator: adding a second hotkey under a taken uid is refused (the seed
silently replaced the first one, seed-spec §12.32). An add that the registry already holds is a
no-op, and the event key an add is recorded under names the registry state it was decided on, so
running the same command twice appends one event.
"""

from __future__ import annotations

from leoma.api.state import VALIDATOR_ADD, ApiState, ValidatorEntry
from leoma.errors import ConflictError


class UidTaken(ConflictError):
    """The uid is registered to another validator; remove that one first."""

    def __init__(self, uid: int, holder: str) -> None:
        super().__init__(f"uid {uid} is already registered to {holder}; remove it first")
        self.uid = uid
        self.holder = holder


def uid_holder(state: ApiState, uid: int, hotkey: str) -> ValidatorEntry | None:
    """The other validator registered under `uid`, if any (`hotkey` itself does not count)."""
    return next((v for v in state.registry.values() if v.uid == uid and v.hotkey != hotkey), None)


def check_uid_free(state: ApiState, uid: int, hotkey: str) -> None:
    """Raise `UidTaken` if `uid` belongs to another validator in the registry."""
    holder = uid_holder(state, uid, hotkey)
    if holder is not None:
        raise UidTaken(uid, holder.hotkey)


def already_registered(state: ApiState, hotkey: str, uid: int, stake_rao: int) -> bool:
    """True if the registry holds `hotkey` with exactly this uid and stake (adding it again changes nothing)."""
    entry = state.registry.get(hotkey)
    return entry is not None and entry.uid == uid and entry.stake_rao == stake_rao


def add_key(state: ApiState, hotkey: str, uid: int, stake_rao: int, *, via: str) -> str:
    """An idempotent event key for adding `hotkey`: the same add on the same registry gives the same key.

    It counts the admin actions already taken on `hotkey`, so an add after a remove gets a new key
    while a retried add (or two racing copies of one) collides with the first and is a no-op.
    """
    touched = sum(1 for _, _, body in state.admin_history if body.target == hotkey)
    return f"admin/{VALIDATOR_ADD}/{hotkey}/{via}/{uid}/{stake_rao}/after/{touched}"
