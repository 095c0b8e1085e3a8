"""The FIWARE IoT Agent JSON payloads: ``{"t": 15, "h": 40}`` or an array of such objects (one group each).

A ``TimeInstant`` member is the group's timestamp. Commands to a device are ``{"<command>": params}``; the device
answers with ``{"<command>": result}`` (several at once are allowed).
"""

from __future__ import annotations

from typing import Any

import orjson

from .payload import DEFAULT_MAX_BYTES, TIME_INSTANT, MeasureGroup, PayloadError, check_names, decode_text, parse_timestamp

_KIND = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _load(payload: bytes | str, max_bytes: int) -> Any:
    if isinstance(payload, bytes | bytearray | memoryview):
        if len(payload) > max_bytes:
            raise PayloadError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    else:
        decode_text(payload, max_bytes)
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if not isinstance(payload, str):
            decode_text(payload, max_bytes)  # a clearer message when the bytes are not UTF-8
        raise PayloadError(f"invalid JSON: {exc}") from None


def _kind(value: Any) -> str:
    return _KIND.get(type(value), "null")


def parse_measures(payload: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[MeasureGroup]:
    """The measure groups of an IoT Agent JSON payload; values keep their JSON types."""
    document = _load(payload, max_bytes)
    if isinstance(document, dict):
        return [_group(document, "payload")]
    if not isinstance(document, list):
        raise PayloadError(f"payload is {_kind(document)}; expected an object of measures or an array of them")
    if not document:
        raise PayloadError("payload is an empty array: no measures")
    groups = []
    for number, item in enumerate(document, 1):
        if not isinstance(item, dict):
            raise PayloadError(f"group {number}: is {_kind(item)}; expected an object of measures")
        groups.append(_group(item, f"group {number}"))
    return groups


def _group(values: dict[str, Any], where: str) -> MeasureGroup:
    if not values:
        raise PayloadError(f"{where}: an empty object has no measures")
    check_names(values, where)
    timestamp = None
    if TIME_INSTANT in values:
        timestamp = values.pop(TIME_INSTANT)
        try:
            parse_timestamp(timestamp)
        except PayloadError as exc:
            raise PayloadError(f"{where}: {TIME_INSTANT}: {exc}") from None
        if not values:
            raise PayloadError(f"{where}: has a {TIME_INSTANT} but no measures")
    return MeasureGroup(values, timestamp)


def encode_command(command: str, params: Any) -> bytes:
    """``{"<command>": params}`` as JSON."""
    if not isinstance(command, str) or not command:
        raise PayloadError(f"command name {command!r} must be a non-empty string")
    try:
        return orjson.dumps({command: params})
    except TypeError as exc:
        raise PayloadError(f"command {command!r}: parameters are not JSON: {exc}") from None


def parse_command_result(payload: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Command name -> result, from a device's ``{"<command>": result, ...}``."""
    document = _load(payload, max_bytes)
    if not isinstance(document, dict):
        raise PayloadError(f"command result is {_kind(document)}; expected an object of command -> result")
    if not document:
        raise PayloadError("command result is an empty object")
    check_names(document, "command result")
    return document
