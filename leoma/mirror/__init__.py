"""The log's mirror: the own log out to the own bucket, peers' logs in from theirs.

    segments    the published layout: object names, the signed checkpoint, encoding and limits
    out         `MirrorOut`: new own events to the own bucket
    inbound     `MirrorIn`: peers' published events into the local log, each object checked
    peers       who the peers are (`PEER_VALIDATORS`) and where their logs are published
    allowlist   the owner's validator allowlist, anchored by the owner's commitment
    anchors     each validator's mirror checkpoint committed on chain, and reading them back
    seedformat  the first implementation's per-task bucket layout and signed verdict file
    seedpeer    peers that still run the first implementation, read into the log
"""
