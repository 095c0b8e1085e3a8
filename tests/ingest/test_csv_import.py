"""`cityops devices import`: devices from a CSV file onto a running server, bad rows reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from server_process import serving

CSV = """device_id,entity_type,apikey,static:district,latitude,longitude,timeout
aed-001,AED,aed-key,Manan-gu,37.3943,126.9568,86400
aed-002,AED,aed-key,Dongan-gu,37.4012,126.9771,
aed-003,AED,aed-key,Dongan-gu,91.5,126.9771,
aed-002,AED,aed-key,Dongan-gu,37.40,126.97,
aed/004,AED,aed-key,,,,
aed-005,AED,aed-key,,37.4,,
aed-006,AED,aed-key,,,,abc
"""


def test_import_provisions_good_rows_and_reports_bad_ones(tmp_path: Path) -> None:
    with serving(tmp_path / "hub.db") as (_, base):
        url = base.removesuffix("/ngsi-ld/v1")
        headers = {"fiware-service": "anyang"}
        group = {"apikey": "aed-key", "resource": "/iot/d", "entity_type": "AED"}
        assert httpx.post(f"{url}/iot/services", json={"services": [group]}, headers=headers).status_code == 201
        existing = {"device_id": "aed-006-x", "entity_type": "AED", "apikey": "aed-key"}
        assert httpx.post(f"{url}/iot/devices", json={"devices": [existing]}, headers=headers).status_code == 201
        path = tmp_path / "aeds.csv"
        path.write_text(CSV + "aed-006-x,AED,aed-key,,,,\n")
        result = subprocess.run(
            [sys.executable, "-m", "cityops", "devices", "import", str(path), "--url", url, "--service", "anyang", "--chunk", "2"],
            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert "8 rows, 2 devices provisioned, 6 refused" in result.stdout
        for line, reason in [(4, "not on the Earth"), (5, "already on line 3"), (6, "not allowed"), (7, "both a latitude"),
                             (8, "not a number"), (9, "already provisioned")]:  # fmt: skip
            assert any(row.startswith(f"  line {line}: ") and reason in row for row in result.stdout.splitlines()), (line, result.stdout)
        devices = httpx.get(f"{url}/iot/devices", headers=headers).json()
        assert sorted(d["device_id"] for d in devices["devices"]) == ["aed-001", "aed-002", "aed-006-x"]
        entity = httpx.get(f"{url}/ngsi-ld/v1/entities/urn:ngsi-ld:AED:aed-001", headers={"NGSILD-Tenant": "anyang"}).json()
        assert entity["location"]["value"] == {"type": "Point", "coordinates": [126.9568, 37.3943]}
        assert entity["district"]["value"] == "Manan-gu"
