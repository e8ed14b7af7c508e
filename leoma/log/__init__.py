"""The event log: what a validator observed and decided, as immutable, signed, hash-chained events.

    events      the envelope, every kind of event, and their canonical bytes
    eventlog    the append-only SQLite log (`EventLog`), hash-chained per origin
    consensus   the pinned consensus configuration (`consensus.toml`) and its digest
    decisions   an epoch's small `epoch_scored` event and its `epoch_detail` parts
    textsafe    untrusted text made safe to record
    export      events out for research: JSON lines, Parquet, a sealed SQLite copy

This package's `__init__` imports nothing, so the pure projections can import `leoma.log.events`
and `leoma.log.consensus` without pulling in the log's storage.
"""
