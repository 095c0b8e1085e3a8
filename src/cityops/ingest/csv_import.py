"""Devices from a CSV file, as an integrator's spreadsheet lists them.

Columns (a header row names them; only ``device_id`` is required): the device fields of
``/iot/devices`` (``device_id``, ``entity_name``, ``entity_type``, ``apikey``, ``protocol``,
``transport``, ``endpoint``, ``timeout``), ``static:<name>`` for a static attribute (a number when
it reads as one, else text), and ``latitude``/``longitude`` (or ``lat``/``lon``) for a fixed
``location``. Each row is checked with the same rules as the API; rows that fail are reported
with their line and reason, the others are provisioned in chunks.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .provisioning import Device, ProvisioningError

DEVICE_COLUMNS = ("device_id", "entity_name", "entity_type", "apikey", "protocol", "transport", "endpoint")
LATITUDE_COLUMNS = ("latitude", "lat")
LONGITUDE_COLUMNS = ("longitude", "lon", "lng")


@dataclass
class Row:
    line: int
    body: dict[str, Any]


def _number_or_text(text: str) -> tuple[str, Any]:
    try:
        number = float(text)
    except ValueError:
        return "Text", text
    return "Number", int(number) if number.is_integer() and "." not in text else number


def device_body(record: dict[str, str]) -> dict[str, Any]:
    """The ``/iot/devices`` item a CSV row describes; ProvisioningError when it cannot be one."""
    body: dict[str, Any] = {k: record[k].strip() for k in DEVICE_COLUMNS if (record.get(k) or "").strip()}
    timeout = (record.get("timeout") or "").strip()
    if timeout:
        try:
            body["timeout"] = float(timeout)
        except ValueError:
            raise ProvisioningError(f"timeout {timeout!r} is not a number of seconds") from None
    static = []
    for column, value in record.items():
        if column and column.startswith("static:") and value is not None and value.strip():
            kind, parsed = _number_or_text(value.strip())
            static.append({"name": column.removeprefix("static:"), "type": kind, "value": parsed})
    lat = next((record[c].strip() for c in LATITUDE_COLUMNS if (record.get(c) or "").strip()), None)
    lon = next((record[c].strip() for c in LONGITUDE_COLUMNS if (record.get(c) or "").strip()), None)
    if (lat is None) != (lon is None):
        raise ProvisioningError("a location needs both a latitude and a longitude")
    if lat is not None and lon is not None:
        try:
            latitude, longitude = float(lat), float(lon)
        except ValueError:
            raise ProvisioningError(f"latitude {lat!r} / longitude {lon!r} are not numbers") from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ProvisioningError(f"latitude {latitude} / longitude {longitude} are not on the Earth")
        static.append({"name": "location", "type": "geo:point", "value": f"{latitude},{longitude}"})
    if static:
        body["static_attributes"] = static
    return body


def read_devices(path: Path, service_path: str = "/") -> tuple[list[Row], list[tuple[int, str]], int]:
    """(rows that are devices, (line, reason) of those that are not, number of data rows)."""
    good: list[Row] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    total = 0
    for line, record in _records(path):
        total += 1
        try:
            body = device_body(record)
            # a row without entity_type takes its service group's on the server: check it as if it had one
            Device.parse({"entity_type": "Device", **body}, service_path, None, "row")
        except ProvisioningError as exc:
            bad.append((line, exc.detail.removeprefix("row: ")))
            continue
        first = seen.setdefault(body["device_id"], line)
        if first != line:
            bad.append((line, f"device_id {body['device_id']!r} is already on line {first}"))
            continue
        good.append(Row(line, body))
    return good, bad, total


def _records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "device_id" not in reader.fieldnames:
            raise ProvisioningError(f"{path}: the first row must name the columns, with at least device_id")
        for record in reader:
            yield reader.line_num, record
