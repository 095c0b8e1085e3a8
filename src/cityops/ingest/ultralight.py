"""UltraLight 2.0, as the FIWARE IoT Agent UL speaks it.

Measures: ``t|15|h|40`` (name|value pairs), groups separated by ``#``, each group optionally led by a timestamp
(``2016-06-13T00:35:30Z|t|15``). Commands to a device: ``<device_id>@<command>|<params>``; the device answers
``<device_id>@<command>|<result>``. Values are untyped text.
"""

from __future__ import annotations

from typing import Any

from ..hub.timestamps import parse_datetime
from .payload import (
    DEFAULT_MAX_BYTES,
    TIME_INSTANT,
    MeasureGroup,
    PayloadError,
    check_name,
    check_names,
    decode_text,
    excerpt,
    js_string,
    parse_timestamp,
)


def parse_measures(payload: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[MeasureGroup]:
    """The measure groups of a UL payload, in order; PayloadError says which group is wrong and why.

    Values stay text. A measure named ``TimeInstant`` becomes the group's timestamp (overriding a leading one),
    as the IoT agent does. Whitespace around groups is ignored, and so are empty groups (``t|1#``).
    """
    text = decode_text(payload, max_bytes)
    groups: list[MeasureGroup] = []
    for number, group in enumerate(text.split("#"), 1):
        group = group.strip()
        if not group:
            continue
        fields = group.split("|")
        timestamp = None
        if len(fields) % 2:
            timestamp = fields[0]
            if not timestamp:
                raise PayloadError(f"group {number}: {excerpt(group)} starts with '|' (an empty measure name)")
            if not _is_timestamp(timestamp):
                raise PayloadError(f"group {number}: {excerpt(group)} has a name without a value")
            fields = fields[1:]
            if not fields:
                raise PayloadError(f"group {number}: timestamp {excerpt(timestamp)} has no measures after it")
        elif _is_timestamp(fields[0]):
            raise PayloadError(f"group {number}: {excerpt(group)} has a name without a value")
        values = dict(zip(fields[::2], fields[1::2]))
        check_names(values, f"group {number}")
        if TIME_INSTANT in values:
            timestamp = values.pop(TIME_INSTANT)
            try:
                parse_timestamp(timestamp)
            except PayloadError as exc:
                raise PayloadError(f"group {number}: {TIME_INSTANT}: {exc}") from None
        groups.append(MeasureGroup(values, timestamp))
    if not groups:
        raise PayloadError("empty payload: no measures")
    return groups


def _is_timestamp(field: str) -> bool:
    # Cheap screen first: a date-time has digits then 'T' (basic 20160613T... or extended 2016-06-13T...).
    if len(field) < 11 or not field[:4].isdigit() or "T" not in field:
        return False
    try:
        parse_datetime(field)
    except ValueError:
        return False
    return True


def format_measures(values: dict[str, Any], timestamp: str | None = None) -> str:
    """One UL measure group; values are written as JavaScript writes them (15.0 -> '15', True -> 'true')."""
    fields = [timestamp] if timestamp is not None else []
    for name, value in values.items():
        check_name(name, "format_measures")
        text = js_string(value)
        if "|" in text or "#" in text:
            raise PayloadError(f"measure {name!r}: value {excerpt(text)} contains '|' or '#', which UL cannot carry")
        fields += (name, text)
    return "|".join(fields)


def encode_command(device_id: str, command: str, params: Any) -> str:
    """``<device_id>@<command>|<params>``: a dict becomes ``k1=v1|k2=v2``, a scalar its text, None or empty nothing."""
    for label, text in (("device id", device_id), ("command name", command)):
        if not text or any(c in text for c in "@|#"):
            raise PayloadError(f"{label} {text!r} must be non-empty and free of '@', '|' and '#'")
    head = f"{device_id}@{command}"
    if params is None or params == "" or params == {}:
        return head
    if isinstance(params, dict):
        parts = []
        for key, value in params.items():
            key, text = js_string(key), js_string(value)
            if not key or any(c in key for c in "=|#") or "|" in text or "#" in text:
                raise PayloadError(f"command {command!r}: parameter {key!r}={excerpt(text)} cannot be written in UL")
            parts.append(f"{key}={text}")
        return head + "|" + "|".join(parts)
    text = js_string(params)
    if "#" in text:
        raise PayloadError(f"command {command!r}: value {excerpt(text)} contains '#', which separates UL commands")
    return f"{head}|{text}"


def parse_command_result(payload: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, str, str]:
    """``(device_id, command, result)`` from ``<device_id>@<command>|<result>`` (the result may contain '|')."""
    text = decode_text(payload, max_bytes).strip()
    head, bar, result = text.partition("|")
    device_id, at, command = head.partition("@")
    if not bar or not at or not device_id or not command or "@" in command:
        raise PayloadError(f"command result {excerpt(text)} is not of the form <device_id>@<command>|<result>")
    return device_id, command, result
