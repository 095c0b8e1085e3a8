"""DateTime values as NGSI-LD writes them (ISO 8601, UTC, 'Z')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def iso_from_microseconds(microseconds: int) -> str:
    """An epoch time in whole microseconds, written to the microsecond: for times that must not
    collide (receipt times a microsecond apart; a float cannot hold that near today's epoch)."""
    return (EPOCH + timedelta(microseconds=microseconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_from_epoch(seconds: float) -> str:
    """An epoch time as NGSI-LD writes DateTimes (UTC, 'Z'; milliseconds unless they are zero)."""
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return (text[:-4] if text.endswith(".000") else text) + "Z"
