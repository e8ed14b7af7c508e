"""The whole subnet on one machine: local buckets, reference miners, stand-ins, one simulated chain.

    config          what a devnet is made of (`DevnetConfig`) and the consensus its validators run
    network         `Devnet`: create or resume one, start and stop its processes, wait for epochs
    watch           looking at a running devnet: progress, decisions, the summary
    world           the outside world on 127.0.0.1: Chutes, reference miners, Hugging Face, Gemini
    judge_standin   a judge that measures instead of guessing, behind the Gemini API
    clips           procedural source videos with known camera motion and scene cuts
    chaos           validators under bad timing and bad actors, decisions fixed by anchors

The simulated chain itself is an adapter (`leoma.adapters.simchain`): the devnet and the tests
use it, and nothing outside this package imports the devnet.
"""
