"""Types, errors and helpers shared by the device payload decoders (UltraLight 2.0, IoT Agent JSON)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from ..hub.timestamps import parse_datetime

DEFAULT_MAX_BYTES = 65536
TIME_INSTANT = "TimeInstant"
# Measure names as the IoT agents accept them (ASCII letters, digits and these).
NAME_PUNCTUATION = "_-.:"
_DELETE_NAME_CHARACTERS = str.maketrans(
    "", "", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + NAME_PUNCTUATION
)
# Devices repeat the same few names in every message: remember the good ones (bounded, so junk cannot grow it).
_KNOWN_GOOD_NAMES: set[str] = set()
_KNOWN_GOOD_NAMES_LIMIT = 4096


class PayloadError(ValueError):
    """A payload the gateway cannot accept; the message says precisely why (it goes to a dead-letter list an operator reads)."""


@dataclass(slots=True)
class MeasureGroup:
    values: dict[str, Any]  # object_id (the device's measure name) -> value (UL: str; JSON: the JSON value)
    timestamp: str | None  # ISO 8601 as sent (the UL group's leading timestamp, or the JSON TimeInstant measure), else None


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted, shortened for an error message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_timestamp(text: Any) -> str:
    """An ISO 8601 date-time (naive means UTC) in the form ``YYYY-MM-DDTHH:MM:SS(.ffffff)Z`` in UTC."""
    if not isinstance(text, str):
        raise PayloadError(f"timestamp {'null' if text is None else repr(text)} is not a string")
    try:
        moment = parse_datetime(text)
    except ValueError:
        raise PayloadError(f"timestamp {excerpt(text)} is not an ISO 8601 date-time (e.g. 2016-06-13T00:35:30Z)") from None
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise PayloadError(f"timestamp {excerpt(text)} is out of range in UTC") from None
    return moment.replace(tzinfo=None).isoformat() + "Z"


def check_name(name: Any, where: str) -> None:
    """Raise PayloadError unless ``name`` is a measure name the IoT agents accept."""
    if name in _KNOWN_GOOD_NAMES:
        return
    if not isinstance(name, str) or not name:
        raise PayloadError(f"{where}: a measure name is empty")
    leftover = name.translate(_DELETE_NAME_CHARACTERS)
    if leftover:
        raise PayloadError(
            f"{where}: measure name {excerpt(name)} has the character {leftover[0]!r} "
            f"(allowed: letters, digits and {' '.join(NAME_PUNCTUATION)})"
        )
    if len(_KNOWN_GOOD_NAMES) < _KNOWN_GOOD_NAMES_LIMIT:
        _KNOWN_GOOD_NAMES.add(name)


def check_names(names: Iterable[Any], where: str) -> None:
    for name in names:
        if name not in _KNOWN_GOOD_NAMES:
            check_name(name, where)


def decode_text(payload: bytes | bytearray | memoryview | str, max_bytes: int) -> str:
    """The payload as text, refusing oversized and non-UTF-8 ones."""
    if isinstance(payload, str):
        if len(payload) > max_bytes // 4 and len(payload.encode("utf-8", "surrogatepass")) > max_bytes:
            size = len(payload.encode("utf-8", "surrogatepass"))
            raise PayloadError(f"payload of {size} bytes exceeds the limit of {max_bytes}")
        return payload
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        return bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None


def js_string(value: Any) -> str:
    """``String(value)`` as JavaScript (so the IoT agents) writes it: 15.0 -> '15', True -> 'true', [1, 2] -> '1,2'."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value) if -(10**21) < value < 10**21 else _js_float(float(value))
    if kind is float:
        return _js_float(value)
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return ",".join("" if item is None else js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _js_float(number: float) -> str:
    """JavaScript's Number::toString: shortest round-trip digits, exponent only below 1e-6 or from 1e21."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    sign = "-" if number < 0 else ""
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)  # value = 0.<digits> * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        text = digits[0] + ("." + digits[1:] if count > 1 else "") + "e" + ("+" if power >= 0 else "-") + str(abs(power))
    return sign + text
