"""The services: each reads projections, calls adapters and appends events. No scoring logic here.

    context    ServiceContext: settings, log, chain, buckets, Chutes, Hugging Face, judge
    checker    one miner-validation pass (seed-spec §2.4) -> metagraph, commitment, miner events
    sampler    this validator's turn: open a task, call miners, judge, publish the verdict file
    reporter   best-effort signed reports to the owner's API
"""
