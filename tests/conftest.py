"""Test-wide fixtures: keep SDK caches and wallets out of the real home directory."""

from __future__ import annotations

import pytest

import leoma.adapters.simchain  # noqa: F401 - registers the `sim:` network, as the `leoma` command does


@pytest.fixture(autouse=True)
def _isolate_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(home / "symbols.json"))
    monkeypatch.setenv("BITTENSOR_RUNTIME_CACHE_DIR", str(home / "runtime-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("LEOMA_DB", raising=False)
    monkeypatch.delenv("LEOMA_STATE_DIR", raising=False)
