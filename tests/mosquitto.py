"""A private Mosquitto broker (the real one, from Debian) on a free port, for tests that restart it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import REQUIRE_SERVICES

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, made with openssl."""
    certificate, key = directory / "broker.crt", directory / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(certificate),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate, key


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists()


class Mosquitto:
    """Persistence on (queued QoS 1 messages survive a restart), no queue limit, MQTT 3.1.1 and 5."""

    def __init__(self, directory: Path, *, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None):
        if not mosquitto_available():
            import pytest

            message = "mosquitto is not installed (apt-get install mosquitto)"
            if REQUIRE_SERVICES:
                pytest.fail(message)
            pytest.skip(message)
        self.directory = directory
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            f"log_dest file {directory}/mosquitto.log\n"
            + ("user root\n" if os.geteuid() == 0 else "")  # as root it would switch to a user that cannot write here
        )
        if users:  # only these users, with their passwords
            passwords = directory / "passwords"
            for number, (user, password) in enumerate(users.items()):
                create = ["-c"] if number == 0 else []
                subprocess.run(["mosquitto_passwd", *create, "-b", str(passwords), user, password], check=True)
            with self.config.open("a") as config:
                config.write(f"password_file {passwords}\n")
            self.config.write_text(self.config.read_text().replace("allow_anonymous true", "allow_anonymous false"))
        if tls:  # (certificate, key): the listener speaks TLS only
            with self.config.open("a") as config:
                config.write(f"certfile {tls[0]}\nkeyfile {tls[1]}\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {(self.directory / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        """A clean stop: the broker saves its sessions and queued messages."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None

    def restart(self, pause: float = 0.5) -> None:
        self.stop()
        time.sleep(pause)
        self.start()
