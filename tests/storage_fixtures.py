"""Stand-ins for S3: a moto server in a subprocess, and a faulty proxy in front of it.

Use from another test module by importing the fixtures into its namespace:

    from tests.storage_fixtures import moto_endpoint, s3_bucket  # noqa: F401

(`moto_endpoint` is session-scoped: one moto process serves the whole run.) The helpers
`start_moto`, `FaultProxy` and `free_port` work outside pytest too (the benchmark uses them).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"  # moto refuses R2's "auto" on CreateBucket


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def start_moto(timeout: float = 30.0) -> Iterator[str]:
    """Run `python -m moto.server` on a free port; yield its endpoint URL; stop it after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {proc.returncode} before serving")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on port {port} within {timeout}s") from None
                time.sleep(0.05)
            finally:
                conn.close()  # a busy machine answers late: a timed-out probe must not leak its socket
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FaultProxy:
    """An HTTP proxy in front of an S3 endpoint that misbehaves on cue.

    `script` is consumed one entry per request: "500" and "429" answer with that status without
    forwarding; "timeout" forwards the request (so the write really happens) and then holds the
    answer for `hold` seconds, longer than the client's read timeout; "pass" forwards. When the
    script is empty every request passes. `forwarded` records (method, path, upstream status)
    of every request that reached the server.
    """

    def __init__(self, upstream: str, hold: float = 1.5) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.hold = hold
        self.script: list[str] = []
        self.forwarded: list[tuple[str, str, int]] = []
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    action = proxy.script.pop(0) if proxy.script else "pass"
                    proxy.seen.append((self.command, self.path, action))
                if action.isdigit():
                    code = {"500": b"InternalError", "429": b"SlowDown", "403": b"AccessDenied"}.get(action, b"Injected")
                    payload = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                        + code
                        + b"</Code><Message>injected by FaultProxy</Message></Error>"
                    )
                    self.send_response(int(action))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path, resp.status))
                if action == "timeout":
                    time.sleep(proxy.hold)
                    self.close_connection = True
                    return  # the client gave up long ago; send nothing
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                # A HEAD answer carries the object's length, not the (empty) body's.
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running in its own process for the whole test session."""
    with start_moto() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket name on the session's moto server (created by the store's ensure_bucket)."""
    return "leoma-" + secrets.token_hex(6)
