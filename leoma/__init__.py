"""Leoma: the validator, owner tools and miner tools of a Bittensor subnet for AI video.

Everything a validator observes or decides is an immutable event in `leoma.log.EventLog`;
everything it shows or does is derived from those events by the pure functions in
`projections`. Heavy clients (bittensor, aioboto3, google-genai) are imported only by the
modules that use them, so importing `leoma` stays cheap.
"""

from __future__ import annotations

__version__ = "0.4.0"

__all__ = ["__version__"]
