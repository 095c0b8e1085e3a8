"""The notification benchmark: changes in, notifications out, measured at a real HTTP receiver.

``python -m bench.notify`` starts ``cityops serve`` (fresh SQLite database, as ``bench.hub``) and
``bench.receiver`` (a raw asyncio HTTP server in its own process), then:

1. loads ``--entities`` (250) ``Sensor`` entities and makes ``--subscriptions`` (1,000) active
   subscriptions, subscription i watching entity i mod 250 (``entities: [{id, type}]``, keyValues,
   ``attributes: [sentAt]``): four subscribers an entity, as a control room, 112, 119 and a
   district office would be, all notifying the receiver over HTTP;
2. **throughput**: for ``--duration`` seconds, batch updates (``POST /entityOperations/update``,
   every entity a request, so each request owes one notification to every subscription), closed
   loop; then waits until the receiver has every notification owed. Notifications per second =
   entity notifications received / time from the first update to the last one received
   (notifications waiting for one subscription are sent together, so HTTP requests are fewer:
   both counts are printed);
3. **latency**: for ``--duration`` seconds, ``PATCH /entities/{id}/attrs`` of one random entity at
   ``--rate`` (1,000) per second, open loop, each carrying its send time (``sentAt``, epoch ns);
   the receiver computes update sent → notification received for every one (p50/p95/p99).

The receiver also counts notifications that arrive out of order per entity (must be 0).
Targets (issue 3): >= 5,000 notifications/s with 1,000 subscriptions; p99 <= 100 ms at 1,000 updates/s.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from .hub import HOST, Server, focused_parser, free_port, git, plain_verdict, run_and_report, start_profiler, targets_table
from .loadgen import LoadSpec, fetch_sync, http_request, run_load
from .profile_summary import summarise_file

ENTITY_TYPE = "Sensor"
JSON_HEADERS = {"Content-Type": "application/json"}


def entity_id(index: int) -> str:
    return f"urn:ngsi-ld:Sensor:bench-{index:05d}"


def sensor(index: int, sent_ns: int) -> dict[str, Any]:
    return {
        "id": entity_id(index),
        "type": ENTITY_TYPE,
        "reading": {"type": "Property", "value": index % 97},
        "sentAt": {"type": "Property", "value": sent_ns},
    }


def subscription(index: int, entity: int, receiver_url: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Subscription:bench-{index:05d}",
        "type": "Subscription",
        "entities": [{"id": entity_id(entity), "type": ENTITY_TYPE}],
        "notification": {
            "format": "keyValues",
            "attributes": ["sentAt"],
            "endpoint": {"uri": receiver_url, "accept": "application/json"},
        },
    }


class Receiver:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log = workdir / "receiver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/notify"

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.receiver", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the receiver did not start")

    def stats(self) -> dict[str, Any]:
        return orjson.loads(fetch_sync(HOST, self.port, http_request("GET", "/stats", host=f"{HOST}:{self.port}"), 5).body)

    def reset(self) -> None:
        fetch_sync(HOST, self.port, http_request("POST", "/reset", host=f"{HOST}:{self.port}", body=b"{}"), 5)

    def wait_for(self, entities: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while stats["entities"] < entities and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = self.stats()
        return stats

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def post(server: Server, target: str, body: Any, expected: tuple[int, ...]) -> None:
    data = http_request("POST", target, host=server.host, body=orjson.dumps(body), headers=JSON_HEADERS)
    response = fetch_sync(HOST, server.port, data, 120)
    if response.status not in expected:
        raise RuntimeError(f"POST {target} answered {response.status}: {response.body[:500]!r}")


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-notify-"))
    receiver = Receiver(workdir)
    server = Server(workdir, workers=args.server_workers, backend=args.backend)
    receiver.start()
    server.start()
    results: dict[str, Any] = {
        "revision": git("rev-parse", "--short", "HEAD"),
        "subscriptions": args.subscriptions,
        "entities": args.entities,
    }
    try:
        post(server, "/ngsi-ld/v1/entityOperations/upsert", [sensor(i, 0) for i in range(args.entities)], (201, 204))
        for i in range(args.subscriptions):
            post(server, "/ngsi-ld/v1/subscriptions", subscription(i, i % args.entities, receiver.url), (201,))
        console.print(f"loaded {args.entities} entities and {args.subscriptions} subscriptions; receiver on port {receiver.port}")

        # -- throughput -------------------------------------------------------------------------
        receiver.reset()
        per_request = args.subscriptions  # every subscription's entity is in every batch
        per_entity = args.subscriptions / args.entities

        def batch(seq: int) -> bytes:
            now = time.time_ns()
            body = orjson.dumps(
                [
                    {"id": entity_id(i), "type": ENTITY_TYPE, "sentAt": {"type": "Property", "value": now}}
                    for i in range(args.entities)
                ]
            )
            return http_request("POST", "/ngsi-ld/v1/entityOperations/update", host=server.host, body=body, headers=JSON_HEADERS)

        profiler = start_profiler(server.pid, args.profile, int(args.duration)) if args.profile else None
        started = time.time_ns()
        load = run_load(
            LoadSpec(
                "batch update", HOST, server.port, batch, frozenset({204}), concurrency=2, duration=args.duration, warmup=0.0
            )
        )
        owed = load.sent * per_request
        stats = receiver.wait_for(owed, timeout=max(60.0, args.duration * 6))
        if profiler is not None:
            profiler.wait(30)
            console.print(summarise_file(args.profile, top=25))
        elapsed = (stats["last_ns"] - started) / 1e9
        results["throughput"] = {
            "updates_sent": load.sent,
            "notifications_owed": owed,
            "notifications_received": stats["entities"],
            "notification_requests": stats["notifications"],
            "seconds": round(elapsed, 2),
            "per_second": round(stats["entities"] / elapsed, 1) if elapsed > 0 else 0.0,
            "out_of_order": stats["out_of_order"],
            "update_to_notification_ms": stats["delay_ms"],
        }

        # -- latency at a steady rate ------------------------------------------------------------
        receiver.reset()
        rng = random.Random(7)

        def patch(seq: int) -> bytes:
            body = orjson.dumps({"sentAt": {"type": "Property", "value": time.time_ns()}})
            target = f"/ngsi-ld/v1/entities/{entity_id(rng.randrange(min(args.entities, args.subscriptions)))}/attrs"
            return http_request("PATCH", target, host=server.host, body=body, headers=JSON_HEADERS)

        load = run_load(
            LoadSpec(
                "patch",
                HOST,
                server.port,
                patch,
                frozenset({204}),
                concurrency=64,
                duration=args.duration,
                warmup=2.0,
                rate=args.rate,
            )
        )
        stats = receiver.wait_for(round(load.sent * per_entity), timeout=60)
        results["latency"] = {
            "rate": args.rate,
            "updates_sent": load.sent,
            "update_http_p99_ms": round(load.percentile_ms(99), 2),
            "notifications_owed": round(load.sent * per_entity),
            "notifications_received": stats["entities"],
            "notification_requests": stats["notifications"],
            "out_of_order": stats["out_of_order"],
            "update_to_notification_ms": stats["delay_ms"],
        }
    finally:
        server.stop()
        receiver.stop()
    return results


def report(results: dict[str, Any], console: Console) -> None:
    table = targets_table(f"notifications (revision {results['revision']}, {results['subscriptions']} subscriptions)")
    throughput = results["throughput"]
    ok = throughput["per_second"] >= 5000 and throughput["notifications_received"] >= throughput["notifications_owed"]
    table.add_row(
        "throughput",
        f"{throughput['per_second']:,.0f} notifications/s ({throughput['notifications_received']:,}/{throughput['notifications_owed']:,} "
        f"delivered in {throughput['seconds']} s in {throughput['notification_requests']:,} requests, {throughput['out_of_order']} out of order)",
        ">= 5,000/s",
        plain_verdict(ok),
    )
    latency = results["latency"]
    p99 = latency["update_to_notification_ms"]["p99"]
    table.add_row(
        f"latency @ {latency['rate']:.0f} updates/s",
        f"p50 {latency['update_to_notification_ms']['p50']} ms, p95 {latency['update_to_notification_ms']['p95']} ms, p99 {p99} ms "
        f"({latency['notifications_received']:,}/{latency['notifications_owed']:,} received, {latency['out_of_order']} out of order)",
        "p99 <= 100 ms",
        plain_verdict(p99 is not None and p99 <= 100 and latency["notifications_received"] >= latency["notifications_owed"]),
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = focused_parser("python -m bench.notify", __doc__)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument(
        "--entities", type=int, default=250, help="subscriptions are spread over them: 250 gives 4 subscribers an entity"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="updates per second in the latency phase")
    parser.add_argument(
        "--profile", type=Path, help="record the server with py-spy during the throughput phase into this file (raw stacks)"
    )
    return run_and_report(parser.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
