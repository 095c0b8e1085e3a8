"""A fast MQTT 3.1.1 load generator on raw asyncio streams, and its self-test.

Why not paho: the Python client spends tens of microseconds a message and tops out near 30,000
messages/s, taking the CPU the server needs on a shared 2-core machine. Here a PUBLISH is a few
pre-encoded pieces (fixed header, the device's topic field, packet id, payload) joined into one
``writer.write`` per connection per tick.

``publish(PublishSpec)`` drives a broker **open loop**: every 10 ms tick it sends what is due by
then (``rate`` × elapsed, at most 100 ms of messages a tick) and stops after ``duration``; messages
go to the devices round robin (message m to device m mod devices, with the sequence number
``first_seq + m``), and device d always on connection d mod ``connections``, so one device's
readings stay in order. QoS 1 messages carry packet ids and each connection keeps at most
``window`` unacknowledged; a reader task counts the PUBACKs. When the broker (or the window) holds
the generator back, what was due but never sent counts as ``unsent``: the achieved rate is sent
messages / ``duration``. ``rate=0`` sends as fast as the broker takes the messages. CPU is the
generator process's own (user + system, from ``/proc/self/stat``) over the sending window.

``python -m bench.mqtt_load --selftest`` starts a private Mosquitto (``Broker``) and a raw
subscriber in a child process (``/ul/+/+/attrs`` at QoS 1, as the gateway subscribes; it answers
every QoS 1 PUBLISH with a PUBACK and counts PUBLISH packets), then publishes UltraLight readings
to 5,000 devices for ``--duration`` (5) s at each of ``--rates`` (20,000 and 40,000 msg/s, and
``max``), at QoS 0 and at QoS 1, and checks that the subscriber received every message sent (and,
at QoS 1, that the broker acknowledged every one). It prints the achieved rates and the CPU of the
generator, the broker and the subscriber, in % of one core.

``python -m bench.mqtt_load --port P --rate R --qos Q`` publishes to a broker that is already
running, for manual runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cityops.ingest.mqtt_client import string_field, varint

from .hub import HOST, free_port, machine_cpu_ticks
from .loadgen import _run_in_new_loop, event_loop_name

MOSQUITTO = "/usr/sbin/mosquitto"
TICK_S = 0.01
BURST = 2000
"""Messages a tick when sending as fast as possible (``rate=0``)."""
PINGREQ, DISCONNECT = b"\xc0\x00", b"\xe0\x00"
CLK_TCK = os.sysconf("SC_CLK_TCK")
Payload = Callable[[int, int], bytes]
"""Builds a message's payload from (device index, sequence number)."""


# -- encoding --------------------------------------------------------------------------------
_LENGTHS = [varint(n) for n in range(16384)]  # every remaining length of up to two bytes
_PIDS = [n.to_bytes(2, "big") for n in range(65536)]


def connect_packet(client_id: str, keepalive: int, clean: bool = True) -> bytes:
    body = b"\x00\x04MQTT\x04" + bytes([0x02 if clean else 0]) + keepalive.to_bytes(2, "big") + string_field(client_id)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(packet_id: int, topic_filter: str, qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + string_field(topic_filter) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int = 1) -> bytes:
    body = string_field(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


def split_packet(data: bytes, at: int) -> tuple[int, int] | None:
    """(start of the body, end) of the packet at ``at``, or None if ``data`` does not hold it all."""
    length, shift, i, n = 0, 0, at + 1, len(data)
    while True:
        if i >= n:
            return None
        byte = data[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    return (i, i + length) if i + length <= n else None


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(first byte, body) of the next packet (for handshakes, not for load)."""
    head = await reader.readexactly(1)
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return head[0], await reader.readexactly(length)


def ul_topic(apikey: str, device: str) -> str:
    return f"/ul/{apikey}/{device}/attrs"


def json_topic(apikey: str, device: str) -> str:
    return f"/json/{apikey}/{device}/attrs"


def ul_payload(device: int, seq: int) -> bytes:
    """An UltraLight 2.0 measure group: temperature, humidity and the sequence number."""
    return b"t|%.1f|h|%d|s|%d" % (15 + seq % 200 / 10, 30 + seq % 50, seq)


def json_payload(device: int, seq: int) -> bytes:
    return b'{"t":%.1f,"h":%d,"s":%d}' % (15 + seq % 200 / 10, 30 + seq % 50, seq)


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- a broker of our own ---------------------------------------------------------------------
class Broker:
    """A private Mosquitto on a free loopback port: no persistence, no limit on queued messages
    (overload queues in the broker instead of being dropped), 100 QoS 1 messages in flight to
    each subscriber; it logs to ``mosquitto.log`` in ``workdir``."""

    def __init__(self, workdir: Path, binary: str = MOSQUITTO):
        self.binary = binary
        self.port = free_port()
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.conf_path.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 100\n"
            f"log_dest file {self.log_path}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"  # as root: stay root, to write the log in our directory
        )
        with open(self.conf_path.with_suffix(".out"), "wb") as out:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {self.log_text()}")
            try:
                socket.create_connection((HOST, self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self, tail: int = 4000) -> str:
        text = b"".join(p.read_bytes() for p in (self.conf_path.with_suffix(".out"), self.log_path) if p.exists())
        return text[-tail:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the publisher ---------------------------------------------------------------------------
class Link:
    """One publishing connection: CONNECT/CONNACK, then raw writes; a reader task counts PUBACKs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.sent = 0  # QoS 1 PUBLISH packets written
        self.acked = 0
        self.next_pid = 0
        self.last_write = time.monotonic()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, client_id: str, keepalive: int) -> Link:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(connect_packet(client_id, keepalive))
        kind, body = await asyncio.wait_for(read_packet(reader), 10)
        if kind != 0x20 or len(body) != 2 or body[1] != 0:
            raise ConnectionError(f"the broker refused the connection: CONNACK {kind:#x} {body!r}")
        link = cls(reader, writer)
        link.task = asyncio.ensure_future(link.read_acks())
        return link

    async def read_acks(self) -> None:
        rest = b""
        while chunk := await self.reader.read(1 << 16):
            data = rest + chunk if rest else chunk
            i, n, acks = 0, len(data), 0
            while i + 1 < n:
                if data[i] == 0x40 and data[i + 1] == 2:  # PUBACK
                    if i + 4 > n:
                        break
                    acks, i = acks + 1, i + 4
                    continue
                frame = split_packet(data, i)  # PINGRESP (or anything else: skipped)
                if frame is None:
                    break
                i = frame[1]
            rest = data[i:]
            self.acked += acks
        self.closed = True

    def write(self, data: bytes, now: float) -> None:
        if self.closed:
            raise ConnectionError("the broker closed the connection")
        self.writer.write(data)
        self.last_write = now

    def ping_if_idle(self, now: float, keepalive: int) -> None:
        if now - self.last_write > keepalive / 2:
            self.write(PINGREQ, now)

    async def close(self) -> None:
        if not self.closed:
            self.writer.write(DISCONNECT)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
        if self.task is not None:
            self.task.cancel()


@dataclass
class PublishSpec:
    host: str
    port: int
    topics: list[str]
    """One topic per device."""
    payload: Payload
    rate: float
    """Messages per second over all connections; 0 = as fast as the broker takes them."""
    duration: float
    qos: int = 0
    connections: int = 4
    window: int = 1000
    """QoS 1: unacknowledged messages allowed per connection."""
    first_seq: int = 0
    keepalive: int = 30
    client_id: str = "cityops-bench-pub"
    ack_timeout: float = 60.0


@dataclass
class PublishResult:
    qos: int
    rate: float
    duration: float
    started: float = 0.0
    """time.monotonic() of the first tick."""
    send_s: float = 0.0
    sent: int = 0
    acked: int = 0
    due: int = 0
    """Messages due by the schedule (open loop)."""
    cpu_s: float = 0.0
    """The generator's CPU over the sending window."""
    ack_wait_s: float = 0.0
    """QoS 1: time from the end of sending until every message was acknowledged (or the timeout)."""

    @property
    def unsent(self) -> int:
        return max(0, self.due - self.sent)

    @property
    def achieved(self) -> float:
        return self.sent / self.send_s if self.send_s > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.send_s if self.send_s > 0 else 0.0


async def publish(spec: PublishSpec) -> PublishResult:
    """Publish ``spec.payload`` to ``spec.topics`` round robin at ``spec.rate`` for ``spec.duration`` s."""
    connections, qos, rate, window = spec.connections, spec.qos, spec.rate, spec.window
    links = list(
        await asyncio.gather(
            *(Link.open(spec.host, spec.port, f"{spec.client_id}-{os.getpid()}-{c}", spec.keepalive) for c in range(connections))
        )
    )
    devices = len(spec.topics)
    fields = [string_field(t) for t in spec.topics]
    field_lengths = [len(f) + (2 if qos else 0) for f in fields]
    link_of = [d % connections for d in range(devices)]
    fixed, lengths, pids, payload = bytes([0x30 | qos << 1]), _LENGTHS, _PIDS, spec.payload
    total = int(rate * spec.duration) if rate else 0
    cap = max(1, int(rate * 0.1)) if rate else BURST
    result = PublishResult(qos, rate, spec.duration)
    sent = 0  # messages so far; message m goes to device m % devices with sequence number first_seq + m
    start = result.started = time.monotonic()
    end, cpu0, tick = start + spec.duration, process_cpu_seconds(), 0
    while True:
        now = time.monotonic()
        last = now >= end  # the last tick sends whatever is still due by ``end``
        due = (total if last else min(total, int((now - start) * rate))) if rate else sent + BURST
        n = min(due - sent, cap)
        parts: list[list[bytes]] = [[] for _ in links]
        if qos:
            room = [window - (link.sent - link.acked) for link in links]
            next_pid = [link.next_pid for link in links]
        d, seq = sent % devices, spec.first_seq + sent
        for k in range(n):
            c = link_of[d]
            body = payload(d, seq + k)
            if qos:
                if room[c] <= 0:
                    n = k  # this connection's window is full: the rest stays due, in order
                    break
                room[c] -= 1
                pid = next_pid[c] = next_pid[c] % 65535 + 1
                parts[c] += (fixed, lengths[field_lengths[d] + len(body)], fields[d], pids[pid], body)
            else:
                parts[c] += (fixed, lengths[field_lengths[d] + len(body)], fields[d], body)
            d = d + 1 if d + 1 < devices else 0
        sent += n
        for c, link in enumerate(links):
            if parts[c]:
                link.write(b"".join(parts[c]), now)
                if qos:
                    link.sent += len(parts[c]) // 5
                    link.next_pid = next_pid[c]
            else:
                link.ping_if_idle(now, spec.keepalive)
        for link in links:
            await link.writer.drain()
        if last:
            break
        tick += 1
        if rate:
            await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
        else:
            await asyncio.sleep(0 if n else 0.001)  # unpaced and the QoS 1 windows full: wait for acks
    result.send_s = time.monotonic() - start
    result.cpu_s = process_cpu_seconds() - cpu0
    result.sent, result.due = sent, total if rate else sent
    if qos:
        deadline = time.monotonic() + spec.ack_timeout
        while any(link.acked < link.sent and not link.closed for link in links) and time.monotonic() < deadline:
            now = time.monotonic()
            for link in links:
                link.ping_if_idle(now, spec.keepalive)
            await asyncio.sleep(0.01)
        result.ack_wait_s = time.monotonic() - start - result.send_s
        result.acked = sum(link.acked for link in links)
    await asyncio.gather(*(link.close() for link in links))
    return result


async def publish_messages(host: str, port: int, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish a few messages on one connection and (QoS 1) wait for their acknowledgements."""
    link = await Link.open(host, port, f"cityops-bench-once-{os.getpid()}", 30)
    for pid, (topic, payload) in enumerate(messages, 1):
        link.write(publish_packet(topic, payload, qos, pid), time.monotonic())
    link.sent = len(messages) if qos else 0
    deadline = time.monotonic() + 10
    while link.acked < link.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await link.close()
    if link.acked < link.sent:
        raise RuntimeError(f"the broker acknowledged {link.acked} of {link.sent} messages")


# -- the self-test's subscriber --------------------------------------------------------------
async def _subscribe(host: str, port: int, topic_filter: str, qos: int, counter: Synchronized[int], ready: Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(connect_packet(f"cityops-bench-sub-{os.getpid()}", 30))
    kind, body = await read_packet(reader)
    if kind != 0x20 or body[1] != 0:
        raise ConnectionError(f"CONNACK {body!r}")
    writer.write(subscribe_packet(1, topic_filter, qos))
    kind, body = await read_packet(reader)
    if kind != 0x90 or body[2] == 0x80:
        raise ConnectionError(f"SUBACK {body!r}")
    ready.set()

    async def ping() -> None:
        while True:
            await asyncio.sleep(10)
            writer.write(PINGREQ)

    pinger = asyncio.ensure_future(ping())
    rest, count = b"", 0
    while chunk := await reader.read(1 << 18):
        data = rest + chunk if rest else chunk
        i, acks = 0, []
        while (frame := split_packet(data, i)) is not None:
            start, end = frame
            if data[i] >> 4 == 3:  # PUBLISH
                count += 1
                if data[i] & 0x06:
                    at = start + 2 + (data[start] << 8 | data[start + 1])
                    acks.append(b"\x40\x02" + data[at : at + 2])
            i = end
        rest = data[i:]
        if acks:
            writer.write(b"".join(acks))
        counter.value = count
    pinger.cancel()


def _subscriber(host: str, port: int, topic_filter: str, qos: int, counter: Synchronized[int], ready: Event) -> None:
    _run_in_new_loop(_subscribe(host, port, topic_filter, qos, counter, ready))


# -- self-test -------------------------------------------------------------------------------
def selftest(args: argparse.Namespace, console: Console) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-mqtt-"))
    broker = Broker(workdir)
    broker.start()
    context = multiprocessing.get_context("fork")
    counter, ready = context.Value("q", 0), context.Event()
    subscriber = context.Process(
        target=_subscriber, args=(HOST, broker.port, "/ul/+/+/attrs", 1, counter, ready), daemon=True
    )
    subscriber.start()
    topics = [ul_topic("bench", f"d{i + 1:05d}") for i in range(args.devices)]
    table = Table(title=f"MQTT generator self-test: {args.devices:,} devices, {args.connections} connections, "
                        f"{args.duration:g} s a run, generator on {event_loop_name()}, Mosquitto {broker.port}")  # fmt: skip
    for column in ("QoS", "offered/s", "sent", "achieved/s", "unsent", "acked", "received", "lost", "CPU gen/broker/sub/other", "verdict"):
        table.add_column(column, justify="left" if column in ("QoS", "verdict") else "right")
    failures, seq = 0, 0
    try:
        if not ready.wait(10):
            raise RuntimeError("the subscriber did not subscribe within 10 s")
        for qos in (0, 1):
            for rate in args.rates:
                before, broker0, sub0, (busy0, all0) = counter.value, broker.cpu_seconds(), process_cpu_seconds(subscriber.pid or 0), machine_cpu_ticks()
                spec = PublishSpec(HOST, broker.port, topics, ul_payload, rate, args.duration, qos, args.connections, args.window, seq)
                result = _run_in_new_loop(publish(spec))
                seq += result.sent
                deadline = time.monotonic() + 30
                while counter.value - before < result.sent and time.monotonic() < deadline and subscriber.is_alive():
                    time.sleep(0.02)
                wall = time.monotonic() - result.started
                time.sleep(0.2)  # anything beyond what was sent would be a duplicate
                received = counter.value - before
                broker_cpu = 100 * (broker.cpu_seconds() - broker0) / wall
                sub_cpu = 100 * (process_cpu_seconds(subscriber.pid or 0) - sub0) / wall
                busy, all_ = machine_cpu_ticks()
                other = 100 * (os.cpu_count() or 1) * (busy - busy0) / max(1, all_ - all0) - broker_cpu - sub_cpu - result.cpu_percent
                passed = received == result.sent and (not qos or result.acked == result.sent) and result.unsent <= 0.01 * result.due
                failures += not passed
                table.add_row(
                    str(qos), f"{rate:,.0f}" if rate else "max", f"{result.sent:,}", f"{result.achieved:,.0f}",
                    f"{result.unsent:,}", f"{result.acked:,}" if qos else "—", f"{received:,}", f"{result.sent - received:,}",
                    f"{result.cpu_percent:.0f}/{broker_cpu:.0f}/{sub_cpu:.0f}/{max(0.0, other):.0f} %", "ok" if passed else "FAIL",
                )  # fmt: skip
                console.print(
                    f"[dim]QoS {qos} at {'max' if not rate else f'{rate:,.0f}/s'}: {result.achieved:,.0f} msg/s, "
                    f"generator CPU {result.cpu_percent:.1f} % of a core, {received:,}/{result.sent:,} received[/dim]"
                )
    finally:
        subscriber.terminate()
        subscriber.join(5)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(table)
    console.print(
        "[dim]achieved: messages sent / sending window; unsent: due by the schedule but never sent (the broker or the QoS 1 "
        "window held the generator back); received: PUBLISH packets the subscriber counted; CPU: % of one core over the "
        "run (broker, subscriber and everything else on the machine: until the subscriber had every message).[/dim]"
    )
    return 1 if failures else 0


def parse_rates(text: str) -> list[float]:
    return [0.0 if r.strip() == "max" else float(r) for r in text.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--selftest", action="store_true", help="measure the generator against a private Mosquitto")
    parser.add_argument("--rates", type=parse_rates, default=[20000.0, 40000.0, 0.0], help="self-test: messages/s, 'max' = unpaced (20000,40000,max)")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, help="without --selftest: the broker to publish to")
    parser.add_argument("--rate", type=float, default=10000.0, help="without --selftest: messages/s (0 = as fast as possible)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--apikey", default="bench")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight per connection")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.selftest:
        return selftest(args, console)
    if args.port is None:
        parser.error("give --port of a running broker, or --selftest")
    topics = [ul_topic(args.apikey, f"d{i + 1:05d}") for i in range(args.devices)]
    spec = PublishSpec(args.host, args.port, topics, ul_payload, args.rate, args.duration, args.qos, args.connections, args.window)
    result = _run_in_new_loop(publish(spec))
    console.print(
        f"QoS {args.qos}: sent {result.sent:,} in {result.send_s:.2f} s ({result.achieved:,.0f}/s, {result.unsent:,} unsent), "
        f"acked {result.acked:,}, generator CPU {result.cpu_percent:.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
