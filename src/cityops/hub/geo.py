"""GeoJSON geometries of GeoProperties, and the NGSI-LD geo-query relations over them.

Stores prefilter candidates with a bounding-box index; ``GeoQuery.matches`` decides exactly.
Distances are in metres: great-circle (haversine) between points, and for other geometries the
planar distance in a local equirectangular projection centred on the query geometry, which is
accurate to well under 1 % within tens of kilometres, the scale of a city.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from .errors import BadRequestData

EARTH_RADIUS_M = 6_371_008.8
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
GEORELS = ("near", "within", "contains", "intersects", "equals", "disjoint", "overlaps")
MAX_DISTANCE_M = 20_050_000.0


def _check_position(position: Any, where: str) -> None:
    if not isinstance(position, list) or not 2 <= len(position) <= 3:
        raise BadRequestData(f"{where}: a position must be an array of 2 or 3 numbers [longitude, latitude(, altitude)]")
    for number in position:
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise BadRequestData(f"{where}: coordinates must be finite numbers, got {number!r}")
    lon, lat = position[0], position[1]
    if not -180 <= lon <= 180:
        raise BadRequestData(f"{where}: longitude {lon} is outside -180..180")
    if not -90 <= lat <= 90:
        raise BadRequestData(f"{where}: latitude {lat} is outside -90..90")


def _check_positions(items: Any, depth: int, where: str) -> None:
    if depth == 0:
        _check_position(items, where)
        return
    if not isinstance(items, list):
        raise BadRequestData(f"{where}: coordinates are not nested as the geometry type requires")
    for item in items:
        _check_positions(item, depth - 1, where)


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def validate_geometry(value: Any, where: str = "geometry") -> None:
    """Check a GeoJSON geometry object (BadRequestData, with the reason, if it is unusable)."""
    if isinstance(value, dict) and value.get("type") == "Point":
        coordinates = value.get("coordinates")
        if coordinates is None:
            raise BadRequestData(f"{where}: a Point needs 'coordinates'")
        _check_position(coordinates, where)
        return
    geometry_of(value, where)


def geometry_of(value: Any, where: str = "geometry") -> BaseGeometry:
    """A checked GeoJSON geometry object as a shapely geometry (BadRequestData if unusable)."""
    if not isinstance(value, dict):
        raise BadRequestData(f"{where}: a GeoJSON geometry must be an object with 'type' and 'coordinates'")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _DEPTH:
        raise BadRequestData(f"{where}: geometry type must be one of {', '.join(GEOMETRY_TYPES)}, got {kind!r}")
    coordinates = value.get("coordinates")
    if coordinates is None:
        raise BadRequestData(f"{where}: a {kind} needs 'coordinates'")
    _check_positions(coordinates, _DEPTH[kind], where)
    if kind in ("MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon") and not coordinates:
        raise BadRequestData(f"{where}: a {kind} needs at least one position")
    if kind == "LineString" and len(coordinates) < 2:
        raise BadRequestData(f"{where}: a LineString needs at least two positions")
    if kind == "MultiLineString" and any(len(line) < 2 for line in coordinates):
        raise BadRequestData(f"{where}: every line of a MultiLineString needs at least two positions")
    rings = coordinates if kind == "Polygon" else [r for polygon in coordinates for r in polygon] if kind == "MultiPolygon" else []
    for ring in rings:
        if len(ring) < 4:
            raise BadRequestData(f"{where}: a polygon ring needs at least four positions")
        if ring[0][:2] != ring[-1][:2]:
            raise BadRequestData(f"{where}: a polygon ring must end where it starts (first and last positions equal)")
    if kind in ("MultiPolygon",) and any(not polygon for polygon in coordinates):
        raise BadRequestData(f"{where}: every polygon of a MultiPolygon needs at least one ring")
    try:
        geometry = shape(value)
    except Exception as exc:  # shapely raises several types for unusable input
        raise BadRequestData(f"{where}: not a usable {kind}: {exc}") from None
    if geometry.is_empty:
        raise BadRequestData(f"{where}: the {kind} is empty")
    if kind in ("Polygon", "MultiPolygon") and not geometry.is_valid:
        # Accepted as other brokers (and ETSI's tests) accept them; decided on its repaired form.
        geometry = shapely.make_valid(geometry)
    return geometry


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def metres_to_degrees(metres: float, latitude: float) -> tuple[float, float]:
    """(longitude span, latitude span) in degrees covering ``metres`` around ``latitude``, rounded up."""
    dlat = math.degrees(metres / EARTH_RADIUS_M) * 1.001
    cos_lat = max(math.cos(math.radians(min(89.0, abs(latitude) + dlat))), 1e-6)
    return dlat / cos_lat, dlat


def bounds_of(value: dict[str, Any]) -> tuple[float, float, float, float]:
    """(min lon, min lat, max lon, max lat) of a GeoJSON geometry."""
    return tuple(shape(value).bounds)  # type: ignore[return-value]


class GeoQuery:
    """One NGSI-LD geo-query: ``georel`` with its distance, a query geometry, and the GeoProperty to test."""

    def __init__(self, georel: str, geometry: dict[str, Any], geoproperty: str):
        relation, _, modifier = georel.partition(";")
        relation = relation.strip()
        if relation not in GEORELS:
            raise BadRequestData(f"georel must be one of {', '.join(GEORELS)}, got {relation!r}")
        self.relation = relation
        self.min_distance: float | None = None
        self.max_distance: float | None = None
        if relation == "near":
            name, sep, number = modifier.partition("==")
            try:
                distance = float(number)
            except ValueError:
                distance = -1.0
            if not sep or name not in ("maxDistance", "minDistance") or not math.isfinite(distance) or distance < 0:
                raise BadRequestData("georel near needs ';maxDistance==<metres>' or ';minDistance==<metres>'")
            if distance > MAX_DISTANCE_M:
                raise BadRequestData(f"georel near distance {distance:g} m is more than half the Earth's circumference")
            if name == "maxDistance":
                self.max_distance = distance
            else:
                self.min_distance = distance
        elif modifier:
            raise BadRequestData(f"georel {relation} takes no modifier, got {modifier!r}")
        self.geojson = geometry
        self.shape = geometry_of(geometry, "geo-query geometry")
        self.geoproperty = geoproperty
        self.point = (geometry["coordinates"][0], geometry["coordinates"][1]) if geometry["type"] == "Point" else None
        centroid = self.shape.centroid
        self._lon0, self._lat0 = centroid.x, centroid.y
        self._kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self._lat0))
        self._ky = math.radians(1) * EARTH_RADIUS_M
        self._projected: BaseGeometry | None = None
        shapely.prepare(self.shape)

    def bbox(self) -> tuple[float, float, float, float] | None:
        """The box an entity's geometry must touch to possibly match; ``None`` when every entity must be tested."""
        if self.relation == "disjoint" or (self.relation == "near" and self.max_distance is None):
            return None
        min_lon, min_lat, max_lon, max_lat = self.shape.bounds
        if self.relation == "near":
            dlon, dlat = metres_to_degrees(self.max_distance or 0.0, max(abs(min_lat), abs(max_lat)))
            return min_lon - dlon, min_lat - dlat, max_lon + dlon, max_lat + dlat
        return min_lon, min_lat, max_lon, max_lat

    def _project(self, geometry: BaseGeometry) -> BaseGeometry:
        lon0, lat0, kx, ky = self._lon0, self._lat0, self._kx, self._ky
        return shapely.transform(geometry, lambda xy: (xy - [lon0, lat0]) * [kx, ky])

    def distance_m(self, geometry: BaseGeometry | None, point: tuple[float, float] | None) -> float:
        if point is not None and self.point is not None:
            return haversine_m(point[0], point[1], self.point[0], self.point[1])
        if self._projected is None:
            self._projected = self._project(self.shape)
            shapely.prepare(self._projected)
        target = geometry if geometry is not None else shapely.Point(point)
        return float(self._projected.distance(self._project(target)))

    def metres_per_degree(self) -> tuple[float, float]:
        """(east-west, north-south) metres a degree at the query point: the local planar projection."""
        assert self.point is not None
        return (
            math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self.point[1])),
            math.radians(1) * EARTH_RADIUS_M,
        )

    @staticmethod
    def band(limit: float) -> float:
        """Metres around a distance limit where the planar distance may disagree with the great circle:
        0.2 % near the limit plus a term growing with the distance (the projection's error grows
        with the square of it; at 50 km about 0.1 %, here covered by 2.7 %)."""
        return limit * (0.002 + limit / 2_000_000) + 0.01

    def near_points(self, rows: list[tuple[int, float, float]]) -> list[tuple[int, float]]:
        """(rid, metres) of the rows (rid, lon, lat) within the near-query's distance of its point.

        Distances are computed for all rows at once in a local equirectangular projection; only
        those within a thin band around the limit are decided by the exact great-circle distance.
        """
        if not rows or self.point is None:
            return []
        data = np.asarray(rows, dtype=float)
        lon0, lat0 = self.point
        kx, ky = self.metres_per_degree()
        approx = np.hypot((data[:, 1] - lon0) * kx, (data[:, 2] - lat0) * ky)
        limit = self.max_distance if self.max_distance is not None else self.min_distance or 0.0
        band = self.band(limit)
        result = []
        for (rid, lon, lat), distance in zip(rows, approx.tolist()):
            if abs(distance - limit) <= band:
                distance = haversine_m(lon, lat, lon0, lat0)
            if self.distance_ok(distance):
                result.append((rid, distance))
        return result

    def matching_points(self, rows: list[tuple[int, float, float]]) -> list[int]:
        """The rids of the rows (rid, lon, lat) whose point satisfies the query (not for near)."""
        if not rows:
            return []
        if self.relation in ("within", "intersects", "disjoint"):
            data = np.asarray(rows, dtype=float)
            if self.relation == "within":
                hits = shapely.contains_xy(self.shape, data[:, 1], data[:, 2])
            else:
                hits = shapely.intersects_xy(self.shape, data[:, 1], data[:, 2])
                if self.relation == "disjoint":
                    hits = ~hits
            return [row[0] for row, hit in zip(rows, hits.tolist()) if hit]
        return [rid for rid, lon, lat in rows if self.matches_point(lon, lat)]

    def matches_point(self, lon: float, lat: float) -> bool:
        if self.relation == "near":
            distance = self.distance_m(None, (lon, lat))
            return self.distance_ok(distance)
        return self.matches_geometry(shapely.Point(lon, lat))

    def distance_ok(self, distance: float) -> bool:
        if self.max_distance is not None:
            return distance <= self.max_distance
        return distance >= (self.min_distance or 0.0)

    def matches_geometry(self, geometry: BaseGeometry) -> bool:
        relation = self.relation
        if relation == "near":
            return self.distance_ok(self.distance_m(geometry, None))
        if relation == "within":
            return bool(geometry.within(self.shape))
        if relation == "contains":
            return bool(geometry.contains(self.shape))
        if relation == "intersects":
            return bool(self.shape.intersects(geometry))
        if relation == "equals":
            return bool(geometry.equals(self.shape))
        if relation == "disjoint":
            return bool(self.shape.disjoint(geometry))
        return bool(geometry.overlaps(self.shape))

    def order_shape(self, found: dict[int, float], key: int, geometry: BaseGeometry) -> None:
        """Record ``key`` in ``found`` (key -> order: metres for near, else the key itself) when
        ``geometry``, one of an entity's non-point geometries, satisfies the query; a nearer one wins."""
        if self.relation == "near":
            distance = self.distance_m(geometry, None)
            if self.distance_ok(distance) and (key not in found or distance < found[key]):
                found[key] = distance
        elif self.matches_geometry(geometry):
            found[key] = float(key)

    def matches_value(self, value: Any) -> bool:
        """Whether a GeoProperty value (a GeoJSON geometry) satisfies the query."""
        if not isinstance(value, dict):
            return False
        if value.get("type") == "Point":
            coordinates = value.get("coordinates") or []
            if len(coordinates) >= 2:
                return self.matches_point(coordinates[0], coordinates[1])
            return False
        try:
            return self.matches_geometry(geometry_of(value))
        except Exception:
            return False
