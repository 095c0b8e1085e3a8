"""The history benchmark: changes recorded as history, and history read back aggregated.

``python -m bench.temporal`` starts ``cityops serve`` (fresh SQLite database, as ``bench.hub``) and:

1. loads 1,000 ``AirQualityObserved`` entities (``bench.hub``'s data);
2. **updates with history**: ``PATCH /entities/{id}/attrs/{pm10|pm25|temperature}`` on random
   entities, closed loop, ``--duration`` seconds; every update adds one attribute instance to
   history in the same transaction;
3. **batch history**: ``POST /entityOperations/upsert?options=update`` of all 1,000 entities, each
   with six new readings (pm10, pm25, no2, o3, temperature, humidity; a new observedAt every
   round), closed loop: 6,000 attribute instances a request into history;
4. **aggregated query**: one entity with 30 days of 1-minute pm10 readings (43,200 instances,
   loaded through ``POST /temporal/entities``), then ``GET /temporal/entities/{id}?attrs=pm10
   &options=aggregatedValues&aggrMethods=avg,max&aggrPeriodDuration=PT1H`` (720 hourly buckets),
   one request at a time, for ``--duration`` seconds: p50/p95/p99.

Targets (issue 3): updates >= 3,000/s; batch history >= 50,000 instances/s; aggregated query p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from .hub import (
    BASE,
    HOST,
    JSON_HEADERS,
    Server,
    batch_bodies,
    focused_parser,
    git,
    patch_factory,
    plain_verdict,
    run_and_report,
    start_profiler,
    targets_table,
)
from .loadgen import LoadSpec, fetch_sync, http_request, run_load
from .profile_summary import summarise_file

ENTITIES = 1000
READINGS = ("pm10", "pm25", "no2", "o3", "temperature", "humidity")
HISTORY_ENTITY = "urn:ngsi-ld:AirQualityObserved:history-30-days"
MINUTES = 30 * 24 * 60
START = datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)


def minute(index: int) -> str:
    return (START + datetime.timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%SZ")


def readings_batch(host: str, round_number: int) -> bytes:
    observed = minute(round_number)
    entities = [
        {
            "id": f"urn:ngsi-ld:AirQualityObserved:anyang-{i:07d}",
            "type": "AirQualityObserved",
            **{
                name: {"type": "Property", "value": (i * 7 + round_number * 13 + k) % 500, "observedAt": observed}
                for k, name in enumerate(READINGS)
            },
        }
        for i in range(ENTITIES)
    ]
    return http_request(
        "POST", f"{BASE}/entityOperations/upsert?options=update", host=host, headers=JSON_HEADERS, body=orjson.dumps(entities)
    )


def load_history(server: Server) -> float:
    """Load the 43,200 readings; seconds it took."""
    started = time.perf_counter()
    chunk = 4320
    for first in range(0, MINUTES, chunk):
        instances = [
            {"type": "Property", "value": 20 + (m * 37 % 61), "observedAt": minute(m)}
            for m in range(first, min(MINUTES, first + chunk))
        ]
        body = orjson.dumps({"id": HISTORY_ENTITY, "type": "AirQualityObserved", "pm10": instances})
        response = fetch_sync(
            HOST,
            server.port,
            http_request("POST", f"{BASE}/temporal/entities", host=server.host, headers=JSON_HEADERS, body=body),
            120,
        )
        if response.status not in (201, 204):
            raise RuntimeError(f"loading history answered {response.status}: {response.body[:300]!r}")
    return time.perf_counter() - started


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-temporal-"))
    server = Server(workdir, workers=args.server_workers, backend=args.backend)
    server.start()
    results: dict[str, Any] = {"revision": git("rev-parse", "--short", "HEAD")}
    try:
        for body in batch_bodies(server.host, 0, ENTITIES):
            if fetch_sync(HOST, server.port, body, 120).status not in (201, 204):
                raise RuntimeError("loading the entities failed")
        updates = run_load(
            LoadSpec(
                "updates",
                HOST,
                server.port,
                patch_factory(server.host, ENTITIES),
                frozenset({204}),
                concurrency=32,
                duration=args.duration,
                warmup=2.0,
            )
        )
        results["updates"] = {
            "per_second": round(updates.throughput, 1),
            "p99_ms": round(updates.percentile_ms(99), 2),
            "errors": updates.unexpected + updates.connection_errors,
        }

        profiler = start_profiler(server.pid, args.profile, int(args.duration) + 2) if args.profile else None
        batch = run_load(
            LoadSpec(
                "batch history", HOST, server.port, lambda seq: readings_batch(server.host, seq), frozenset({204}),
                concurrency=2, duration=args.duration, warmup=2.0, units_per_request=ENTITIES * len(READINGS),
            )
        )  # fmt: skip
        if profiler is not None:
            profiler.wait(30)
            console.print(summarise_file(args.profile, top=30))
        results["batch"] = {
            "requests_per_second": round(batch.throughput, 2),
            "instances_per_second": round(batch.units_per_second, 1),
            "errors": batch.unexpected + batch.connection_errors,
        }

        results["history_load_s"] = round(load_history(server), 2)
        target = f"{BASE}/temporal/entities/{HISTORY_ENTITY}?attrs=pm10&options=aggregatedValues&aggrMethods=avg,max&aggrPeriodDuration=PT1H"
        check = orjson.loads(fetch_sync(HOST, server.port, http_request("GET", target, host=server.host), 60).body)
        buckets = len(check["pm10"]["avg"])
        aggregated = run_load(
            LoadSpec("aggregated", HOST, server.port, lambda seq: http_request("GET", target, host=server.host), frozenset({200}),
                     concurrency=1, duration=args.duration, warmup=1.0)
        )  # fmt: skip
        results["aggregated"] = {
            "instances": MINUTES,
            "buckets": buckets,
            "per_second": round(aggregated.throughput, 1),
            "p50_ms": round(aggregated.percentile_ms(50), 2),
            "p95_ms": round(aggregated.percentile_ms(95), 2),
            "p99_ms": round(aggregated.percentile_ms(99), 2),
        }
    finally:
        server.stop()
    return results


def report(results: dict[str, Any], console: Console) -> None:
    table = targets_table(f"history (revision {results['revision']})")
    updates, batch, aggregated = results["updates"], results["batch"], results["aggregated"]
    table.add_row(
        "updates with history",
        f"{updates['per_second']:,.0f}/s (p99 {updates['p99_ms']} ms)",
        ">= 3,000/s",
        plain_verdict(updates["per_second"] >= 3000),
    )
    table.add_row(
        "batch history",
        f"{batch['instances_per_second']:,.0f} instances/s ({batch['requests_per_second']} requests/s of 6,000)",
        ">= 50,000/s",
        plain_verdict(batch["instances_per_second"] >= 50000),
    )
    table.add_row(
        f"aggregated query ({aggregated['instances']:,} instances, {aggregated['buckets']} buckets)",
        f"p50 {aggregated['p50_ms']} ms, p95 {aggregated['p95_ms']} ms, p99 {aggregated['p99_ms']} ms",
        "p95 <= 50 ms",
        plain_verdict(aggregated["p95_ms"] <= 50),
    )
    console.print(table)
    console.print(f"43,200 readings loaded through POST /temporal/entities in {results['history_load_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = focused_parser("python -m bench.temporal", __doc__)
    parser.add_argument(
        "--profile", type=Path, help="record the server with py-spy during the batch phase into this file (raw stacks)"
    )
    return run_and_report(parser.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
