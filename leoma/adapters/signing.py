"""sr25519 signatures over Leoma's own objects (checkpoints), with domain separation.

Uses `bittensor_core` (the Rust core of bittensor v11) directly: its `Keypair` is the same as
`bittensor.Keypair`, and importing it costs milliseconds instead of the whole SDK. Every signed
message is `domain || "\\n" || sha256(payload)`, so a signature made for one purpose can never
be replayed as another.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, Protocol

import msgspec

from leoma.errors import SignatureError

CHECKPOINT_DOMAIN = b"leoma-checkpoint/v1"

# The seed's shape of an address (base58 alphabet, 47-48 characters): a cheap first filter
# before the SDK decodes it and checks its blake2b checksum.
SS58_SHAPE: Final = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{47,48}$")


def is_ss58(text: object) -> bool:
    """Whether `text` is an SS58 address of a 32-byte public key with a valid checksum.

    The shape is the seed's; the checksum is checked by the SDK's own decoder
    (`bittensor_core.ss58_decode`, the same function as `bittensor.sp_core.ss58_decode`),
    so a typo in any character is refused rather than accepted as a different key.
    """
    if not isinstance(text, str) or not SS58_SHAPE.match(text):
        return False
    from bittensor_core import ss58_decode

    try:
        return len(ss58_decode(text)) == 32
    except ValueError:
        return False


class Signer(Protocol):
    """Anything that signs bytes with an sr25519 key: a bittensor `Keypair` or a wallet hotkey."""

    @property
    def ss58_address(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def keypair_from_uri(uri: str) -> Signer:
    """A throw-away keypair from a dev URI such as `//Alice` (tests and the devnet)."""
    from bittensor_core import Keypair

    return Keypair.create_from_uri(uri)


def message(domain: bytes, payload: bytes) -> bytes:
    """The bytes actually signed for `payload` under `domain`."""
    return domain + b"\n" + hashlib.sha256(payload).digest()


def sign(signer: Signer, domain: bytes, payload: bytes) -> str:
    """Sign `payload` under `domain`; returns `0x`-prefixed hex."""
    return "0x" + bytes(signer.sign(message(domain, payload))).hex()


def verify(ss58: str, domain: bytes, payload: bytes, signature: str) -> None:
    """Raise `SignatureError` unless `signature` is `ss58`'s signature of `payload` under `domain`."""
    from bittensor_core import verify as sr_verify

    if not isinstance(signature, str) or not signature:
        raise SignatureError("signature is missing")
    text = signature[2:] if signature.startswith("0x") else signature
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SignatureError("signature is not hex") from None
    if len(raw) != 64:
        raise SignatureError(f"signature is {len(raw)} bytes, an sr25519 signature is 64")
    try:
        ok = sr_verify(message(domain, payload), raw, ss58)
    except Exception as exc:  # the Rust core raises plain errors for bad addresses
        raise SignatureError(f"cannot verify against {ss58[:12]}…: {exc}") from None
    if not ok:
        raise SignatureError(f"signature does not verify for {ss58[:12]}…")


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The head of one origin's published log.

    `size` events exist (origin_seq 1..size), the last with hash `head`. Layout 1 (the first
    one) names its segments by a rule from `segment_size` alone; layout 2 also lists the small
    objects past the last full segment (`tail`: first, last, level) and optional shortcuts
    (`extra`: first, last). Either way readers need no LIST (see `leoma.mirror`).
    """

    origin: str
    size: int
    head: str
    consensus_digest: str
    segment_size: int
    block: int = 0
    layout: int = 1
    tail: tuple[tuple[int, int, int], ...] = ()
    extra: tuple[tuple[int, int], ...] = ()


class SignedCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint and the origin's signature over its canonical bytes."""

    checkpoint: Checkpoint
    signature: str


class _RawSigned(msgspec.Struct, frozen=True, kw_only=True):
    checkpoint: msgspec.Raw
    signature: str


_enc = msgspec.json.Encoder(order="deterministic")
_dec = msgspec.json.Decoder(_RawSigned)
_cp_dec = msgspec.json.Decoder(Checkpoint)


def sign_checkpoint(signer: Signer, checkpoint: Checkpoint) -> bytes:
    """Serialise `checkpoint` with the origin's signature (the bytes to upload)."""
    if checkpoint.origin != signer.ss58_address:
        raise SignatureError("a checkpoint can only be signed by its own origin's hotkey")
    sig = sign(signer, CHECKPOINT_DOMAIN, _enc.encode(checkpoint))
    return _enc.encode(SignedCheckpoint(checkpoint=checkpoint, signature=sig))


def read_checkpoint(data: bytes, *, origin: str) -> Checkpoint:
    """Parse and verify an uploaded checkpoint of `origin`; `SignatureError` if it is not theirs."""
    # The signature covers the checkpoint's bytes as written, so a checkpoint written before a
    # field was added (layout 1 has no `tail`) still verifies: nothing is re-encoded.
    try:
        signed = _dec.decode(data)
        checkpoint = _cp_dec.decode(signed.checkpoint)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SignatureError(f"checkpoint is malformed: {exc}") from None
    if checkpoint.origin != origin:
        raise SignatureError(f"checkpoint names origin {checkpoint.origin[:12]}…, expected {origin[:12]}…")
    verify(origin, CHECKPOINT_DOMAIN, bytes(signed.checkpoint), signed.signature)
    return checkpoint
