"""Logging for the long-running commands: stdlib `logging` under the `leoma` logger.

Text for people (`block=.. task=..` fields appended), or one JSON object per line for machines
(`--log-format json`). Libraries that log request URLs or headers (httpx, botocore, bittensor,
uvicorn) are held at WARNING so no key or presigned URL reaches the log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = ["FIELDS", "NOISY", "JsonFormatter", "TextFormatter", "setup_logging"]

# Correlation fields a log call may pass with `extra=`; shown on every line that has them.
FIELDS = ("epoch", "block", "task", "miner", "loop", "peer", "seq")

# Loggers that would leak URLs (presigned, with keys in the query) or tokens at INFO/DEBUG.
NOISY = ("httpx", "httpcore", "botocore", "boto3", "aiobotocore", "s3transfer", "urllib3", "bittensor",
         "bittensor_core", "websockets", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "google_genai",
         "huggingface_hub", "filelock")


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00Z INFO leoma.sampler task=12: message` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        fields = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None)
        line = f"{stamp} {record.levelname:<7} {record.name}{(' ' + fields) if fields else ''}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k in FIELDS:
            value = getattr(record, k, None)
            if value is not None:
                out[k] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> logging.Logger:
    """Configure the `leoma` logger (idempotent); returns it.

    `fmt` is "text" or "json". Only the `leoma` logger gets a handler, so a library that
    installs its own root handler cannot duplicate or reformat Leoma's lines.
    """
    if fmt not in ("text", "json"):
        from leoma.errors import ConfigError

        raise ConfigError(f"log format must be 'text' or 'json', not {fmt!r}: pass --log-format text or json")
    logger = logging.getLogger("leoma")
    numeric = logging.getLevelName(str(level).upper())
    logger.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for handler in list(logger.handlers):
        if getattr(handler, "_leoma", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._leoma = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return logger
