"""Miner tools: what a miner runs to deploy its model, serve it and see where it stands.

    chute       the chute template a model is served by, and what a validator would refuse
    deploy      `leoma miner push`: `chutes deploy`, then the new chute's id
    reference   the reference miner: the `/generate` contract over plain HTTP
    status      `leoma miner status`: commitment, checks, chute, last tasks and rank
"""
