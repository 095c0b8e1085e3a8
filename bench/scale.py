"""The scale benchmark: a city-sized hub, on PostgreSQL by default.

``python -m bench.scale [--backend postgresql|sqlite] [--entities 1000000] [--history 10000000]``
starts ``cityops serve`` on a fresh database and, through the HTTP API only:

1. **batch upsert**: loads ``--entities`` located ``AirQualityObserved`` entities (``bench.hub``'s
   data, spread over Anyang) in upserts of 1,000, two connections: entities/s;
2. **near-query**: ``georel=near;maxDistance==500`` around random points in Anyang, limit 20,
   one request at a time for ``--duration`` seconds: p50/p95/p99;
3. **history**: loads ``--history`` attribute instances across ``--history-entities`` entities
   (``POST /temporal/entities``, 10 entities of ``history / history-entities`` instances a
   request), plus one entity with 30 days of 1-minute readings (43,200), then the aggregated query
   of that entity over the 30 days (``aggrMethods=avg,max&aggrPeriodDuration=PT1H``), one request
   at a time: p50/p95/p99.

Targets (issue "PostgreSQL + PostGIS backend"): batch upsert >= 30,000 entities/s; near over 1
million located entities p95 <= 30 ms; the aggregated query with 10 million instances stored
p95 <= 100 ms.
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
    near_factory,
    plain_verdict,
    run_and_report,
    targets_table,
)
from .loadgen import LoadSpec, fetch_sync, http_request, run_load
from .temporal import HISTORY_ENTITY, load_history

START = datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)


def history_request(host: str, first_entity: int, entities: int, instances: int) -> bytes:
    """Readings of ``entities`` sensors, ``instances`` each, spread over the 30 days."""
    step = 30 * 24 * 3600 / instances
    body = [
        {
            "id": f"urn:ngsi-ld:AirQualityObserved:history-{e:06d}",
            "type": "AirQualityObserved",
            "pm10": [
                {
                    "type": "Property",
                    "value": (e * 31 + k * 7) % 200,
                    "observedAt": (START + datetime.timedelta(seconds=k * step)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for k in range(instances)
            ],
        }
        for e in range(first_entity, first_entity + entities)
    ]
    return http_request("POST", f"{BASE}/temporal/entities", host=host, headers=JSON_HEADERS, body=orjson.dumps(body))


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-scale-"))
    server = Server(workdir, workers=args.server_workers, backend=args.backend)
    server.start(timeout=60)
    results: dict[str, Any] = {"revision": git("rev-parse", "--short", "HEAD"), "backend": args.backend, "workers": args.server_workers}
    try:
        batches = args.entities // 1000
        console.print(f"loading {args.entities:,} entities in {batches:,} batch upserts…")
        load = run_load(
            LoadSpec("batch upsert", HOST, server.port, lambda seq: batch_bodies(server.host, seq * 1000, seq * 1000 + 1000)[0],
                     frozenset({201, 204}), concurrency=2, requests=batches, units_per_request=1000, timeout=600)
        )  # fmt: skip
        results["batch_upsert"] = {
            "entities_per_second": round(load.units_per_second, 1),
            "seconds": round(load.window_s, 1),
            "errors": load.unexpected + load.connection_errors,
        }
        near = run_load(
            LoadSpec("near", HOST, server.port, near_factory(server.host), frozenset({200}),
                     concurrency=1, duration=args.duration, warmup=2.0)
        )  # fmt: skip
        results["near"] = {
            "entities": args.entities,
            "per_second": round(near.throughput, 1),
            "p50_ms": round(near.percentile_ms(50), 2),
            "p95_ms": round(near.percentile_ms(95), 2),
            "p99_ms": round(near.percentile_ms(99), 2),
            "errors": near.unexpected + near.connection_errors,
        }

        per_entity = max(1, args.history // args.history_entities)
        group = 10
        requests = args.history_entities // group
        console.print(f"loading {per_entity * args.history_entities:,} history instances in {requests:,} requests…")
        started = time.perf_counter()
        history = run_load(
            LoadSpec("history", HOST, server.port, lambda seq: history_request(server.host, seq * group, group, per_entity),
                     frozenset({201, 204}), concurrency=2, requests=requests, units_per_request=group * per_entity, timeout=600)
        )  # fmt: skip
        results["history_load"] = {
            "instances": per_entity * args.history_entities,
            "instances_per_second": round(history.units_per_second, 1),
            "seconds": round(time.perf_counter() - started, 1),
            "errors": history.unexpected + history.connection_errors,
        }
        results["history_load"]["aggregated_entity_load_s"] = round(load_history(server), 2)
        target = f"{BASE}/temporal/entities/{HISTORY_ENTITY}?attrs=pm10&options=aggregatedValues&aggrMethods=avg,max&aggrPeriodDuration=PT1H"
        check = fetch_sync(HOST, server.port, http_request("GET", target, host=server.host), 120)
        buckets = len(orjson.loads(check.body)["pm10"]["avg"])
        aggregated = run_load(
            LoadSpec("aggregated", HOST, server.port, lambda seq: http_request("GET", target, host=server.host), frozenset({200}),
                     concurrency=1, duration=args.duration, warmup=1.0)
        )  # fmt: skip
        results["aggregated"] = {
            "buckets": buckets,
            "p50_ms": round(aggregated.percentile_ms(50), 2),
            "p95_ms": round(aggregated.percentile_ms(95), 2),
            "p99_ms": round(aggregated.percentile_ms(99), 2),
        }
        results["database_mib"] = round(server.database_bytes() / 2**20, 1)
    finally:
        server.stop()
    return results


def report(results: dict[str, Any], console: Console) -> None:
    table = targets_table(f"scale on {results['backend']}, {results['workers']} worker(s) (revision {results['revision']})")
    load, near, history, aggregated = results["batch_upsert"], results["near"], results["history_load"], results["aggregated"]
    table.add_row(
        "batch upsert", f"{load['entities_per_second']:,.0f} entities/s ({load['seconds']} s, {load['errors']} errors)",
        ">= 30,000/s", plain_verdict(load["entities_per_second"] >= 30000),
    )  # fmt: skip
    table.add_row(
        f"near 500 m, limit 20, {near['entities']:,} located entities",
        f"p50 {near['p50_ms']} ms, p95 {near['p95_ms']} ms, p99 {near['p99_ms']} ms ({near['per_second']}/s)",
        "p95 <= 30 ms", plain_verdict(near["p95_ms"] <= 30),
    )  # fmt: skip
    table.add_row(
        f"aggregated query, 30 days PT1H ({aggregated['buckets']} buckets) with {history['instances']:,} instances stored",
        f"p50 {aggregated['p50_ms']} ms, p95 {aggregated['p95_ms']} ms, p99 {aggregated['p99_ms']} ms",
        "p95 <= 100 ms", plain_verdict(aggregated["p95_ms"] <= 100),
    )  # fmt: skip
    console.print(table)
    console.print(
        f"history loaded at {history['instances_per_second']:,.0f} instances/s ({history['seconds']} s); "
        f"database {results.get('database_mib', 0):,.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = focused_parser("python -m bench.scale", __doc__)
    parser.set_defaults(backend="postgresql")
    parser.add_argument("--entities", type=int, default=1_000_000, help="located entities loaded by batch upsert")
    parser.add_argument("--history", type=int, default=10_000_000, help="history instances loaded")
    parser.add_argument("--history-entities", type=int, default=10_000, help="entities the history is spread over")
    return run_and_report(parser.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
