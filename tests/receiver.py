"""A real HTTP notification receiver for tests: a threaded server on a local port that records
every request, and can be stopped and started again on the same port."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Receiver:
    def __init__(self, port: int = 0, status: int = 200):
        self.received: list[Received] = []
        self.status = status
        self._condition = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                receiver._connections.add(self.connection)

            def finish(self) -> None:
                receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._condition:
                    if receiver.status < 300:
                        receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver._condition.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every open connection: the receiver is gone, as a crash would leave it."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` notifications, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} notification(s) within {timeout} s, got {len(self.received)}")
                self._condition.wait(left)
            return list(self.received[:count])

    def wait_for_data(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first ``count`` entities notified (notifications waiting together arrive as one)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(data := [e for r in self.received for e in r.body.get("data", ())]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} notified entities within {timeout} s, got {len(data)}")
                self._condition.wait(left)
            return data[:count]

    def quiet(self, seconds: float = 0.5) -> list[Received]:
        """Everything received once nothing more arrives for ``seconds``."""
        seen = -1
        while seen != len(self.received):
            seen = len(self.received)
            time.sleep(seconds)
        return list(self.received)

    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.received]
