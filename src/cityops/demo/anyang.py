"""The starter data set of ``make demo``: CCTV cameras, AEDs and air-quality stations placed inside
the real dong boundaries of Anyang-si, written through the hub like any client's data.

Entity shapes follow the FIWARE Smart Data Models where one exists (Camera, AirQualityObserved);
the AED has no model, so ``AutomatedExternalDefibrillator`` is defined here in the same style.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from ..geography.korea import ATTRIBUTION, CITIES, Area, dongs
from ..hub.context import ContextResolver
from ..hub.entity import Entity, parse_entity
from ..hub.hub import Hub
from ..hub.timestamps import now_iso
from ..settings import Settings, SettingsError
from ..store.contract import DEFAULT_TENANT
from ..store.sqlite import SQLiteStore

CAMERA_PURPOSES = ("crimePrevention", "crimePrevention", "crimePrevention", "traffic", "facility", "disaster")
BUILDINGS = ("apartment complex", "subway station", "community centre", "school", "park", "market", "library")


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def _prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def demo_entities(seed: int = 20171, cameras_per_dong: int = 40, aeds_per_dong: int = 12) -> list[dict[str, Any]]:
    """Entities in NGSI-LD normalized form, deterministic for a seed."""
    rng = random.Random(seed)
    now = now_iso()
    areas: list[Area] = dongs(*CITIES["Anyang"])
    entities: list[dict[str, Any]] = []
    camera_number = aed_number = 0
    for area in areas:
        address = {"addressLocality": "안양시", "addressRegion": "경기도", "district": area.name}
        for lon, lat in area.random_points(cameras_per_dong, rng):
            camera_number += 1
            purpose = rng.choice(CAMERA_PURPOSES)
            entities.append(
                {
                    "id": f"urn:ngsi-ld:Camera:anyang-{camera_number:04d}",
                    "type": "Camera",
                    "name": _prop(f"{area.name} CCTV {camera_number:04d}"),
                    "cameraUsage": _prop(purpose),
                    "cameraOrientation": _prop(rng.randrange(0, 360, 15), unitCode="DD"),
                    "fieldOfView": _prop(rng.choice((60, 90, 110)), unitCode="DD"),
                    "range": _prop(rng.choice((30, 50, 80)), unitCode="MTR"),
                    "ptz": _prop(rng.random() < 0.3),
                    "status": _prop(rng.choices(("on", "off"), (97, 3))[0], observedAt=now),
                    "streamURL": _prop(f"rtsp://cctv.anyang.example/{camera_number:04d}/main"),
                    "retentionDays": _prop(30, unitCode="DAY"),
                    "address": _prop(address),
                    "location": _point(lon, lat),
                }
            )
        for lon, lat in area.random_points(aeds_per_dong, rng):
            aed_number += 1
            battery = rng.randint(35, 100)
            entities.append(
                {
                    "id": f"urn:ngsi-ld:AutomatedExternalDefibrillator:anyang-{aed_number:03d}",
                    "type": "AutomatedExternalDefibrillator",
                    "name": _prop(f"AED at {rng.choice(BUILDINGS)}, {area.name}"),
                    "selfTestResult": _prop(rng.choices(("pass", "fail"), (95, 5))[0], observedAt=now),
                    "batteryLevel": _prop(battery, unitCode="P1", observedAt=now),
                    "padExpiryDate": _prop(f"{rng.randint(2026, 2029)}-{rng.randint(1, 12):02d}-01"),
                    "address": _prop(address),
                    "location": _point(lon, lat),
                }
            )
        lon, lat = area.random_points(1, rng)[0]
        pm10 = rng.randint(15, 120)
        entities.append(
            {
                "id": f"urn:ngsi-ld:AirQualityObserved:anyang-{area.code}",
                "type": "AirQualityObserved",
                "name": _prop(f"{area.name} air-quality station"),
                "pm10": _prop(pm10, unitCode="GQ", observedAt=now),
                "pm25": _prop(round(pm10 * rng.uniform(0.4, 0.7)), unitCode="GQ", observedAt=now),
                "no2": _prop(round(rng.uniform(0.005, 0.06), 3), unitCode="59", observedAt=now),
                "o3": _prop(round(rng.uniform(0.01, 0.09), 3), unitCode="59", observedAt=now),
                "address": _prop(address),
                "location": _point(lon, lat),
            }
        )
    return entities


async def _load(settings: Settings, bodies: list[dict[str, Any]]) -> int:
    store = SQLiteStore(settings.database, synchronous=settings.sqlite_synchronous, cache_mb=settings.sqlite_cache_mb)
    await store.open()
    try:
        hub = Hub(store)
        terms = ContextResolver().core
        now = now_iso()
        entities: list[Entity] = [parse_entity(body, terms, now=now) for body in bodies]
        result = await hub.batch_upsert(DEFAULT_TENANT, entities, replace=True)
        return len(result.success)
    finally:
        await store.close()


def prepare_demo(settings: Settings, *, fresh: bool, console: Console) -> None:
    if settings.database == ":memory:":
        raise SettingsError("the demo loads its data before the server starts, so it needs a database file, not ':memory:'")
    path = Path(settings.database)
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    bodies = demo_entities()
    count = asyncio.run(_load(settings, bodies))
    base = f"http://{settings.host}:{settings.port}/ngsi-ld/v1"
    console.print(f"[bold]CityOps demo[/bold]: {count} entities of Anyang-si in {settings.database}")
    console.print(f"  {ATTRIBUTION}", soft_wrap=True)
    console.print("Try:")
    for label, url in (
        ("entity types", f"{base}/types?details=true"),
        ("five cameras", f"{base}/entities?type=Camera&limit=5&options=keyValues"),
        ("cameras within 300 m of Anyang City Hall", f"{base}/entities?type=Camera&georel=near;maxDistance==300"
         "&geometry=Point&coordinates=[126.9568,37.3943]&options=keyValues"),
        ("AEDs that failed their self-test", f'{base}/entities?type=AutomatedExternalDefibrillator&q=selfTestResult=="fail"&count=true'),
        ("air quality worse than 80 ug/m3 PM10", f"{base}/entities?type=AirQualityObserved&q=pm10>80&attrs=pm10,name"),
    ):
        console.print(f"  {label}:\n    curl -g '{url}'", soft_wrap=True)
    console.print(
        f"  the same as a GeoJSON map layer:\n    curl -g -H 'Accept: application/geo+json' '{base}/entities?type=Camera&limit=1000'",
        soft_wrap=True,
    )
    root = f"http://{settings.host}:{settings.port}"
    json_header = "-H 'Content-Type: application/json'"
    console.print(
        "  a device through the IoT gateway (FIWARE IoT agent API): provision it, send a reading, read its entity:\n"
        f"    curl -X POST {root}/iot/services {json_header} -d '{{\"services\": [{{\"apikey\": \"demo\", \"resource\": \"/iot/d\", "
        '"entity_type": "AirQualityObserved", "attributes": [{"object_id": "p", "name": "pm10", "type": "Number"}]}]}\'\n'
        f"    curl -X POST '{root}/iot/d?k=demo&i=station-99' -d 'p|85'\n"
        f"    curl {base}/entities/urn:ngsi-ld:AirQualityObserved:station-99",
        soft_wrap=True, markup=False,
    )  # fmt: skip
    console.print("Stop with Ctrl-C. Data stays in the file; 'cityops demo --keep' reuses it.")
