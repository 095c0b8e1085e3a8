"""The real server as a child process, for tests that kill it or talk to it over TCP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(database: str | Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``cityops serve`` in a child process, once it answers /health. Its log goes to a file (a pipe
    nobody reads would block it once full); ``server_log`` reads it."""
    log = tempfile.NamedTemporaryFile(prefix="cityops-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "cityops", "serve", "--port", str(port), "--database", str(database), "--log-level", "warning", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    process.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {server_log(process)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 30 s")


def server_log(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@contextlib.contextmanager
def serving(database: str | Path, *extra: str, env: dict[str, str] | None = None, port: int | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """A running server and its NGSI-LD base URL; stopped afterwards, its log printed if the test failed."""
    port = port or free_port()
    process = start_server(database, port, *extra, env=env)
    try:
        yield process, f"http://127.0.0.1:{port}/ngsi-ld/v1"
    except BaseException:
        print(server_log(process))
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
