"""A lean MQTT 5 client on asyncio streams for the gateway's intake: one connection, read in large
chunks, every complete PUBLISH in a chunk decoded in one pass and handed on as a batch.

Why not paho: it decodes one packet per loop turn in a thread of its own, tens of microseconds a
message plus the GIL passing between that thread and the event loop; at 20,000 messages/s that is
most of a core. This client does only what the gateway needs: CONNECT with a persistent session
and a Receive Maximum, SUBSCRIBE, receiving PUBLISH (QoS 0 and 1), PUBACK, PINGREQ, publishing
(for device commands) and DISCONNECT. The caller reconnects (``cityops.ingest.mqtt``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
PING = b"\xc0\x00"
READ_CHUNK = 256 * 1024
_PACKET_IDS = [n.to_bytes(2, "big") for n in range(65536)]
_PUBACK_HEAD = b"\x40\x02"


class MqttError(Exception):
    """The broker refused us or broke the protocol; the connection is no longer usable."""


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining lengths, property lengths): 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string_field(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _read_varint(data: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(value, position after it), or None when the buffer ends inside it."""
    value, shift = 0, 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 21:
            raise MqttError("a remaining length longer than four bytes")
    return None


def connect_packet(client_id: str, keepalive: int, *, clean_start: bool, session_expiry: int, receive_maximum: int,
                   username: str | None = None, password: str | None = None) -> bytes:  # fmt: skip
    properties = b"\x11" + session_expiry.to_bytes(4, "big") + b"\x21" + receive_maximum.to_bytes(2, "big")
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + keepalive.to_bytes(2, "big") + varint(len(properties)) + properties
    body += string_field(client_id)
    if username is not None:
        body += string_field(username)
    if password is not None:
        body += string_field(password)
    return bytes([CONNECT << 4]) + varint(len(body)) + body


def subscribe_packet(packet_id: int, filters: Iterable[str], qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"\x00" + b"".join(string_field(f) + bytes([qos]) for f in filters)
    return bytes([(SUBSCRIBE << 4) | 0x02]) + varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    body = string_field(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + b"\x00" + payload
    return bytes([(PUBLISH << 4) | (qos << 1)]) + varint(len(body)) + body


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool


class MqttConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keepalive: int):
        self.reader = reader
        self.writer = writer
        self.keepalive = keepalive
        self.session_present = False
        self.last_heard = time.monotonic()
        self._buffer = bytearray()
        self._next_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._other: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    @classmethod
    async def open(cls, host: str, port: int, client_id: str, *, tls: ssl.SSLContext | None, keepalive: int,
                   session_expiry: int, receive_maximum: int, username: str | None, password: str | None,
                   timeout: float = 10.0) -> MqttConnection:  # fmt: skip
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls, limit=READ_CHUNK), timeout)
        connection = cls(reader, writer, keepalive)
        try:
            writer.write(connect_packet(client_id, keepalive, clean_start=False, session_expiry=session_expiry,
                                        receive_maximum=receive_maximum, username=username, password=password))  # fmt: skip
            kind, body = await asyncio.wait_for(connection._read_control(), timeout)
            if kind != CONNACK or len(body) < 2:
                raise MqttError(f"the broker answered CONNECT with packet type {kind}")
            if body[1] != 0:
                raise MqttError(f"the broker refused the connection (reason code 0x{body[1]:02x})")
            connection.session_present = bool(body[0] & 1)
        except BaseException:
            writer.close()
            raise
        return connection

    async def _read_control(self) -> tuple[int, bytes]:
        """One packet, during the handshake (before ``receive`` runs)."""
        while True:
            packet = self._split()
            if packet is not None:
                return packet
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                raise MqttError("the broker closed the connection")
            self._buffer += chunk

    def _split(self) -> tuple[int, bytes] | None:
        if len(self._buffer) < 2:
            return None
        length = _read_varint(self._buffer, 1)
        if length is None or length[1] + length[0] > len(self._buffer):
            return None
        end = length[1] + length[0]
        packet = (self._buffer[0], bytes(self._buffer[length[1] : end]))
        del self._buffer[:end]
        return packet[0] >> 4, packet[1]

    def new_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def subscribe(self, filters: list[str], qos: int = 1) -> None:
        self.writer.write(subscribe_packet(self.new_packet_id(), filters, qos))
        await self.writer.drain()

    async def receive(self) -> list[Publish]:
        """The PUBLISH packets of the next chunk read (waits for at least one packet of any kind);
        answers PINGRESP and PUBACK bookkeeping itself. Raises MqttError when the connection ends."""
        found = self._parse()  # what came with the CONNACK, or after the last packets returned
        while not found:
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                raise MqttError("the broker closed the connection")
            self.last_heard = time.monotonic()
            self._buffer += chunk
            found = self._parse()
        return found

    def _parse(self) -> list[Publish]:
        data = self._buffer
        found: list[Publish] = []
        at, size = 0, len(data)
        while at + 2 <= size:
            first = data[at]
            length = _read_varint(data, at + 1)
            if length is None:
                break
            remaining, start = length
            end = start + remaining
            if end > size:
                break
            kind = first >> 4
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                topic_length = (data[start] << 8) | data[start + 1]
                position = start + 2 + topic_length
                topic = data[start + 2 : position].decode("utf-8", "replace")
                packet_id = 0
                if qos:
                    packet_id = (data[position] << 8) | data[position + 1]
                    position += 2
                properties = _read_varint(data, position)
                if properties is None:
                    raise MqttError("a PUBLISH with broken properties")
                position = properties[1] + properties[0]
                found.append(Publish(topic, bytes(data[position:end]), qos, packet_id, bool(first & 0x08)))
            elif kind == PUBACK:
                packet_id = (data[start] << 8) | data[start + 1]
                future = self._acks.pop(packet_id, None)
                if future is not None and not future.done():
                    reason = data[start + 2] if remaining > 2 else 0
                    if reason < 0x80:
                        future.set_result(None)
                    else:
                        future.set_exception(MqttError(f"the broker refused a publish (reason code 0x{reason:02x})"))
            elif kind == DISCONNECT:
                reason = data[start] if remaining else 0
                raise MqttError(f"the broker disconnected us (reason code 0x{reason:02x})")
            # SUBACK and PINGRESP need nothing
            at = end
        del data[:at]
        return found

    def acknowledge(self, packet_ids: list[int]) -> None:
        if packet_ids:
            self.writer.write(b"".join(_PUBACK_HEAD + _PACKET_IDS[p] for p in packet_ids))

    def ping(self) -> None:
        self.writer.write(PING)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 10.0) -> None:
        """Publish, and for QoS 1 wait until the broker has it."""
        if not qos:
            self.writer.write(publish_packet(topic, payload, 0))
            await self.writer.drain()
            return
        packet_id = self.new_packet_id()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[packet_id] = future
        self.writer.write(publish_packet(topic, payload, qos, packet_id))
        await self.writer.drain()
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(packet_id, None)

    async def close(self) -> None:
        for future in self._acks.values():
            if not future.done():
                future.set_exception(MqttError("the connection was closed"))
        try:
            self.writer.write(b"\xe0\x00")
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            pass

