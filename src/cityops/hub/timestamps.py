"""DateTime values as NGSI-LD writes them (ISO 8601, UTC, 'Z')."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """The current time in UTC with millisecond precision, e.g. ``2026-11-23T17:25:40.123Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 date-time with a 'T' (a bare date is not a DateTime); naive means UTC."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an ISO 8601 DateTime: {text!r}")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def is_datetime(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_datetime(text)
    except ValueError:
        return False
    return True


def iso_from_epoch(seconds: float, *, microseconds: bool = False) -> str:
    """An epoch time as NGSI-LD writes DateTimes (UTC, 'Z'; milliseconds unless they are zero, or
    always microseconds when asked: times that must not collide, such as receipt times)."""
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if microseconds:
        return text + "Z"
    text = text[:-3]
    return (text[:-4] if text.endswith(".000") else text) + "Z"
