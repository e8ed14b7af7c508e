"""Adapters: the one place each outside system is spoken to. They import no services.

    storage     the object-store contract and `open_store(url)`; `directory` and `s3` implement it
    chain       `Chain`: the bittensor v11 client; `simchain` (+ `beacon`) is the simulated chain
                behind the SDK's `Substrate` seam that the devnet and the tests use
    chutes      the Chutes API and calling a miner's chute (httpx)
    judge       Gemini (google-genai): describe a source clip, score a miner's video
    hub         Hugging Face model metadata (huggingface_hub)
    video       PyAV: probing, clip selection, cutting, encoding
    gates       one decode of a miner's video: the measurements its gates are decided from
    signing     sr25519 signatures over Leoma's own objects, SS58 checks
    wallets     the bittensor wallet whose hotkey signs
    retry       the one retry policy (tenacity, with jitter) every adapter uses
"""
