"""The deployment recipes: every variable they document is one Leoma reads, and stops are clean."""

from __future__ import annotations

import re
from pathlib import Path

from leoma.config import _ENV
from leoma.serve import SERVE_ENV, ServeOptions

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {var for var, _ in _ENV.values()} | set(SERVE_ENV)


def example_vars() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "env.validator.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_every_variable_in_the_example_is_one_leoma_reads() -> None:
    names = example_vars()
    assert names, "env.validator.example lists no variables"
    assert sorted(set(names) - KNOWN) == []


def test_the_example_documents_every_setting_with_a_line_each() -> None:
    text = (ROOT / "env.validator.example").read_text().splitlines()
    assert sorted(KNOWN - set(example_vars())) == []
    for i, line in enumerate(text):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert text[i - 1].startswith("# "), f"{line.split('=')[0]} has no comment line above it"


def test_the_example_loads() -> None:
    from leoma.config import Settings
    from leoma.serve import serve_options

    env = {k: v for k, v in example_vars().items() if v}
    settings = Settings.load(env=env, dotenv=False)
    assert settings.netuid == 99 and settings.miner_validation_interval == 1200
    assert serve_options(env=env, dotenv=False).metrics_addr == "127.0.0.1:9108"


def test_compose_keeps_the_log_and_mounts_the_wallet_read_only() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert 'command: ["leoma", "serve"]' in text and "env_file: .env" in text
    assert re.search(r"- leoma-state:/var/lib/leoma\b", text) and "LEOMA_STATE_DIR: /var/lib/leoma" in text
    assert re.search(r"wallets:/root/\.bittensor/wallets:ro", text)
    assert "profiles: [\"autoupdate\"]" in text and "stop_signal: SIGTERM" in text
    grace = int(re.search(r"stop_grace_period: (\d+)s", text).group(1))  # type: ignore[union-attr]
    assert grace > ServeOptions().flush_timeout


def test_systemd_and_pm2_give_the_flush_time_to_finish() -> None:
    unit = (ROOT / "deploy" / "leoma-validator.service").read_text()
    assert "KillSignal=SIGTERM" in unit and "ExecStart=" in unit and " serve" in unit
    assert int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1)) > ServeOptions().flush_timeout  # type: ignore[union-attr]
    pm2 = (ROOT / "deploy" / "ecosystem.config.js").read_text()
    assert 'args: "serve"' in pm2 and "autorestart: true" in pm2
    assert int(re.search(r"kill_timeout: (\d+)", pm2).group(1)) > ServeOptions().flush_timeout * 1000  # type: ignore[union-attr]
