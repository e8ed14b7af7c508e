"""Pure projections: events (plus the pinned consensus config) in, state out.

Nothing here performs I/O, reads a clock or draws a random number, and no comparison that feeds a
verdict or a weight is made in floats: rates are `fractions.Fraction`, counts are integers, and
every iteration over a set or dict is sorted first. Two validators holding the same events
therefore compute the same decision, bit for bit.

    rotation   allowlist + block -> task id, whose turn, failover
    miners     commitments + checks -> miner views, valid set, duplicates
    window     opened tasks -> canonical sampler per task -> settled scoring window
    scores     verdicts in the window -> per-validator rates -> per-miner average, eligibility
    ranking    aggregates -> dominance winner and full order
    weights    ranked miners + metagraph -> the weight vector (or the burn)
    epoch      all of the above folded from the log: the epoch decision (`score_epoch`, `EpochFold`)

Modules here import nothing from `leoma` except `leoma.log.events`, `leoma.log.consensus` and
`leoma.errors`.
"""
