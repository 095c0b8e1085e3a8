"""How delivery to a subscription's endpoint has gone, as GET /subscriptions shows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DeliveryStatus:
    """What GET /subscriptions shows under ``notification``: how delivery has gone."""

    times_sent: int = 0
    times_failed: int = 0
    last_notification: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    consecutive_errors: int = 0
    last_error_reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliveryStatus:
        return cls(
            times_sent=data.get("timesSent", 0),
            times_failed=data.get("timesFailed", 0),
            last_notification=data.get("lastNotification"),
            last_success=data.get("lastSuccess"),
            last_failure=data.get("lastFailure"),
            consecutive_errors=data.get("consecutiveErrors", 0),
            last_error_reason=data.get("lastErrorReason"),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.times_sent:  # nothing until a first attempt: no zero counters
            body["timesSent"] = self.times_sent
            body["status"] = "failed" if self.consecutive_errors else "ok"
        optional = {
            "timesFailed": self.times_failed or None,
            "lastNotification": self.last_notification,
            "lastSuccess": self.last_success,
            "lastFailure": self.last_failure,
            "consecutiveErrors": self.consecutive_errors or None,
            "lastErrorReason": self.last_error_reason,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body
