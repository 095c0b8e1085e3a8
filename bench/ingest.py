"""The ingest benchmark: device readings in over MQTT and HTTP, counted as stored by the IoT gateway.

``python -m bench.ingest`` starts a private Mosquitto (``bench.mqtt_load.Broker``: no persistence,
no limit on queued messages, 100 QoS 1 messages in flight to a subscriber) and ``cityops serve``
(fresh database, as ``bench.hub``) with ``CITYOPS_MQTT_URL`` pointing at that broker, then:

1. provisions one service group (tenant ``bench``, apikey ``bench``, entity type ``BenchSensor``,
   UltraLight attributes t → temperature, h → humidity, s → seq) and ``--devices`` (5,000) devices
   ``d00001``… through ``POST /iot/services`` and ``POST /iot/devices`` (1,000 a request);
2. publishes one probe reading over MQTT until the gateway stores it (its subscription is live);
3. runs the phases of ``--phases`` (default qos0,qos1,http):

   - **qos0**: UltraLight readings ``t|21.5|h|40|s|<seq>`` to ``/ul/bench/<device>/attrs`` at
     QoS 0, ``--rate0`` (20,000) readings/s for ``--duration`` (30) s, open loop, round robin over
     the devices (``bench.mqtt_load``; 4 connections); ``seq`` numbers every reading of the run;
   - **qos1**: the same at QoS 1, ``--rate1`` (10,000) readings/s;
   - **http**: ``POST /iot/d?k=bench&i=<device>`` with 10 measure groups joined by ``#``, closed
     loop on ``--http-clients`` (8) keep-alive connections for ``--duration`` s (``bench.loadgen``);
   - **overload**: QoS 1 at twice ``--rate1`` for ``--overload-duration`` (300) s, the server's
     RSS (and the broker's) sampled every 5 s.

For each phase, after sending stops it polls ``GET /metrics`` every 50 ms until
``cityops_ingest_readings_total`` of the phase's transport has grown (over all outcomes) by the
number of readings sent, giving up when the count has not grown for ``--drain-timeout`` (120) s.
It reports: offered and achieved send rates; readings stored vs sent (lost = sent - stored;
duplicates and dead letters as the gateway counts them); **stored readings/s** = stored / (first
send → the poll that saw the last one stored); how long after the last send that was (**drain**);
p50/p95/p99 of ``cityops_ingest_receipt_to_stored_seconds`` over the phase (the histogram's delta,
interpolated within buckets as Prometheus' ``histogram_quantile`` does); CPU in % of one core of
the server (first send → all stored), the generator (while sending), the broker, and everything
else. At the end it reads every device's history count (``GET /ngsi-ld/v1/temporal/entities``,
``aggrMethods=totalCount``, ``aggrPeriodDuration=PT0S``, paged, tenant ``bench``) and compares the
total with every reading sent.

Targets: QoS 0 >= 20,000 readings/s and QoS 1 >= 10,000 readings/s, judged as *kept pace*: the
offered rate was sent and every reading was stored within 1 s of the last send (stored/s over
first send → last stored is a little below the offered rate even for a gateway that keeps up);
p99 receipt→stored <= 200 ms (qos0, qos1, http); stored == sent in every phase and in history;
overload: RSS flat (the max of the second half within 10 % of the max of the first) and nothing lost.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from .hub import HOST, Server, WindowSampler, focused_parser, git, plain_verdict, run_and_report, targets_table
from .loadgen import LoadSpec, Response, _run_in_new_loop, fetch_sync, http_request, run_load
from .mqtt_load import (
    Broker,
    PublishResult,
    PublishSpec,
    json_payload,
    json_topic,
    publish,
    publish_messages,
    ul_payload,
    ul_topic,
)
from .profile_summary import summarise_file

TENANT = APIKEY = "bench"
ENTITY_TYPE = "BenchSensor"
GROUPS_PER_REQUEST = 10
DEVICES_PER_REQUEST = 1000
HISTORY_PAGE = 1000
PROVISION_HEADERS = {"Content-Type": "application/json", "fiware-service": TENANT, "fiware-servicepath": "/"}
READINGS = "cityops_ingest_readings_total"
LATENCY = "cityops_ingest_receipt_to_stored_seconds"
OUTCOMES = ("stored", "duplicate", "dead_letter")
PHASES = ("qos0", "qos1", "http", "overload")
KEPT_PACE_S = 1.0
P99_LIMIT_MS = 200.0
POLL_S = 0.05
MEMORY_EVERY_S = 5.0


def device_id(index: int) -> str:
    return f"d{index + 1:05d}"


# -- Prometheus metrics ----------------------------------------------------------------------
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """One scrape of ``/metrics``: (name, labels, value) of every sample."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            if line and not line.startswith("#") and (match := _SAMPLE.match(line)):
                samples.append((match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])))
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for n, found, v in self.samples if n == name and all(found.get(k) == x for k, x in labels.items()))

    def buckets(self, name: str) -> dict[float, float]:
        """Cumulative counts of a histogram by upper bound (summed over its other labels)."""
        out: dict[float, float] = {}
        for n, labels, value in self.samples:
            if n == f"{name}_bucket":
                le = float(labels["le"])
                out[le] = out.get(le, 0.0) + value
        return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation within the bucket holding rank q·n
    (from 0 in the first bucket); the +Inf bucket gives the highest finite bound. NaN when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    for i, upper in enumerate(bounds):
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return bounds[i - 1] if i > 0 else math.nan
            lower, below = (bounds[i - 1], buckets[bounds[i - 1]]) if i > 0 else (0.0, 0.0)
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
    return math.nan


def delta_buckets(after: Metrics, before: Metrics, name: str) -> dict[float, float]:
    old = before.buckets(name)
    return {le: count - old.get(le, 0.0) for le, count in after.buckets(name).items()}


# -- the benchmark ---------------------------------------------------------------------------
class Ingest:
    def __init__(self, args: argparse.Namespace, console: Console, server: Server, broker: Broker):
        self.args, self.console, self.server, self.broker = args, console, server, broker
        self.seq = 0  # the next reading's sequence number (``s``), over the whole run
        self.sent_total = 0
        make_topic = json_topic if args.format == "json" else ul_topic
        self.topics = [make_topic(APIKEY, device_id(i)) for i in range(args.devices)]
        self.payload = json_payload if args.format == "json" else ul_payload
        self.profiles: dict[str, str] = {}

    # -- HTTP helpers ----------------------------------------------------------------------------
    def post(self, target: str, body: Any, expected: int) -> Response:
        data = http_request("POST", target, host=self.server.host, body=orjson.dumps(body), headers=PROVISION_HEADERS)
        response = fetch_sync(HOST, self.server.port, data, 120)
        if response.status != expected:
            hint = " (does this cityops serve have the IoT gateway?)" if response.status in (404, 405) else ""
            raise RuntimeError(f"provisioning failed: POST {target} answered {response.status}{hint}: {response.body[:500]!r}")
        return response

    def metrics(self) -> Metrics:
        response = self.server.get("/metrics")
        if response.status != 200:
            raise RuntimeError(f"GET /metrics answered {response.status}: {response.body[:300]!r}")
        return Metrics.parse(response.body.decode())

    def outcomes(self, after: Metrics, before: Metrics, transport: str) -> dict[str, int]:
        return {
            o: round(after.total(READINGS, transport=transport, outcome=o) - before.total(READINGS, transport=transport, outcome=o))
            for o in OUTCOMES
        }

    # -- set-up ----------------------------------------------------------------------------------
    def provision(self) -> None:
        attributes = [{"object_id": o, "name": n, "type": "Number"} for o, n in (("t", "temperature"), ("h", "humidity"), ("s", "seq"))]
        group = {"apikey": APIKEY, "entity_type": ENTITY_TYPE, "resource": "/iot/d", "attributes": attributes, "autoprovision": False}
        self.post("/iot/services", {"services": [group]}, 201)
        protocol = "PDI-IoTA-JSON" if self.args.format == "json" else "PDI-IoTA-UltraLight"
        for first in range(0, self.args.devices, DEVICES_PER_REQUEST):
            devices = [
                {"device_id": device_id(i), "entity_type": ENTITY_TYPE, "protocol": protocol, "transport": "MQTT", "apikey": APIKEY}
                for i in range(first, min(self.args.devices, first + DEVICES_PER_REQUEST))
            ]
            self.post("/iot/devices", {"devices": devices}, 201)

    def probe(self, timeout: float = 30.0) -> float:
        """One reading over MQTT, again every 3 s, until the gateway has stored one; seconds it took."""
        before, started = self.metrics(), time.monotonic()
        while time.monotonic() - started < timeout:
            _run_in_new_loop(publish_messages(HOST, self.broker.port, [(self.topics[0], self.payload(0, self.seq))]))
            self.seq, self.sent_total = self.seq + 1, self.sent_total + 1
            sent_at = time.monotonic()
            while time.monotonic() - sent_at < 3.0:
                if self.outcomes(self.metrics(), before, "mqtt")["stored"] >= 1:
                    return time.monotonic() - started
                time.sleep(0.1)
        raise RuntimeError(f"the gateway stored no MQTT reading within {timeout:g} s (subscribed to {self.broker.url}?)")

    # -- phases ----------------------------------------------------------------------------------
    def sampler(self, key: str, seconds: float) -> WindowSampler:
        profile_to = Path(self.args.profile) / f"{key}.txt" if self.args.profile else None
        if profile_to is not None:
            self.profiles[key] = str(profile_to)
        return WindowSampler(self.server, profile_to, max(1, int(seconds)))

    def mqtt_phase(self, key: str, qos: int, rate: float, duration: float, memory: bool = False) -> dict[str, Any]:
        self.console.print(f"[dim]… {key}: QoS {qos} at {rate:,.0f} readings/s for {duration:g} s[/dim]")
        spec = PublishSpec(
            HOST, self.broker.port, self.topics, self.payload, rate, duration, qos, self.args.connections, self.args.window, self.seq
        )
        samples: list[tuple[float, int, int]] = []  # (seconds into the phase, server RSS KiB, broker RSS KiB)

        async def drive() -> PublishResult:
            started = time.monotonic()

            async def sample() -> None:
                while True:
                    samples.append((time.monotonic() - started, self.server.memory_kib()["VmRSS"], self.broker.rss_kib()))
                    await asyncio.sleep(MEMORY_EVERY_S)

            task = asyncio.ensure_future(sample()) if memory else None
            try:
                return await publish(spec)
            finally:
                if task is not None:
                    task.cancel()

        before, sampler, broker_cpu = self.metrics(), self.sampler(key, duration), self.broker.cpu_seconds()
        sampler("start")
        result = _run_in_new_loop(drive())
        self.seq += result.sent
        row = self.finish(key, "mqtt", before, sampler, broker_cpu, result.started, result.send_s, result.sent)
        row.update(
            qos=qos, offered=f"{rate:,.0f}/s QoS {qos}", offered_rate=rate, send_rate=round(result.achieved, 1),
            unsent=result.unsent, acked=result.acked if qos else None, generator_cpu_percent=round(result.cpu_percent, 1),
        )  # fmt: skip
        if memory:
            half = duration / 2
            first = max((s for t, s, _ in samples if t < half), default=0)
            second = max((s for t, s, _ in samples if t >= half), default=0)
            end = self.server.memory_kib()["VmRSS"]
            row["memory"] = {
                "samples_mib": [[round(t, 1), round(s / 1024, 1), round(b / 1024, 1)] for t, s, b in samples],
                "start_mib": round(samples[0][1] / 1024, 1) if samples else None,
                "max_mib": round(max(first, second) / 1024, 1),
                "end_mib": round(end / 1024, 1),
                "first_half_max_mib": round(first / 1024, 1),
                "second_half_max_mib": round(second / 1024, 1),
                "growth_percent": round(100 * (second - first) / first, 1) if first else None,
                "flat": bool(first) and second <= 1.1 * first,
                "broker_max_mib": round(max((b for _, _, b in samples), default=0) / 1024, 1),
            }
        return row

    def http_phase(self) -> dict[str, Any]:
        args, host, first = self.args, self.server.host, self.seq
        self.console.print(f"[dim]… http: POST /iot/d, {GROUPS_PER_REQUEST} readings a request, closed loop, {args.http_clients} connections[/dim]")
        targets = [f"/iot/d?k={APIKEY}&i={device_id(i)}" for i in range(args.devices)]
        text = {"Content-Type": "text/plain"}

        def make(seq: int) -> bytes:
            device, base = seq % args.devices, first + seq * GROUPS_PER_REQUEST
            body = b"#".join(ul_payload(device, base + j) for j in range(GROUPS_PER_REQUEST))
            return http_request("POST", targets[device], host=host, body=body, headers=text)

        spec = LoadSpec("http", HOST, self.server.port, make, frozenset({200}), concurrency=args.http_clients,
                        duration=args.duration, warmup=0.0, units_per_request=GROUPS_PER_REQUEST)  # fmt: skip
        before, sampler, broker_cpu = self.metrics(), self.sampler("http", args.duration), self.broker.cpu_seconds()
        sampler("start")
        started = time.monotonic()
        result = run_load(spec)
        sent = result.sent * GROUPS_PER_REQUEST
        self.seq += sent
        row = self.finish("http", "http", before, sampler, broker_cpu, started, result.window_s, sent)
        row.update(
            offered=f"closed loop, {args.http_clients} conn.", send_rate=round(sent / result.window_s, 1) if result.window_s else 0.0,
            generator_cpu_percent=round(result.generator_cpu_percent, 1), http_errors=result.unexpected + result.connection_errors,
            http_failures=result.failures, http_latency_ms={f"p{p}": round(result.percentile_ms(p), 1) for p in (50, 99)},
        )  # fmt: skip
        return row

    def finish(
        self, key: str, transport: str, before: Metrics, sampler: WindowSampler, broker_cpu: float, started: float, send_s: float, sent: int
    ) -> dict[str, Any]:
        """Wait until the gateway has counted every reading sent; the phase's figures."""
        self.sent_total += sent
        sent_end = started + send_s
        last_count, last_change = -1, time.monotonic()
        while True:
            after, now = self.metrics(), time.monotonic()
            counted = self.outcomes(after, before, transport)
            if sum(counted.values()) >= sent:
                break
            if counted["stored"] != last_count:
                last_count, last_change = counted["stored"], now
            if now - last_change > self.args.drain_timeout:
                self.console.print(f"[yellow]{key}: stored count stuck at {last_count:,} of {sent:,} for {self.args.drain_timeout:g} s[/yellow]")
                break
            if not self.server.alive():
                raise RuntimeError(f"the server died during {key}:\n{self.server.log_text()}")
            time.sleep(POLL_S)
        sampler("end")
        sampler.wait_profiler()
        if key in self.profiles and Path(self.profiles[key]).exists():
            self.console.print(f"[bold]profile of the server during {key}[/bold] ({self.profiles[key]}):")
            self.console.print(summarise_file(Path(self.profiles[key]), top=25), markup=False, highlight=False)
        buckets = delta_buckets(after, before, LATENCY)
        stored, window = counted["stored"], now - started
        broker_percent = 100 * (self.broker.cpu_seconds() - broker_cpu) / window
        return {
            "key": key, "transport": transport, "duration_s": round(send_s, 2), "sent": sent, **counted, "lost": sent - stored,
            "stored_per_s": round(stored / window, 1) if window > 0 else 0.0, "drain_s": round(now - sent_end, 2),
            "receipt_to_stored_ms": {f"p{round(q * 100)}": round(1000 * histogram_quantile(q, buckets), 1) for q in (0.5, 0.95, 0.99)},
            "observations": round(max(buckets.values(), default=0)),
            "server_cpu_percent": round(sampler.server_cpu_percent, 1), "broker_cpu_percent": round(broker_percent, 1),
            "machine_cpu_percent": round(sampler.machine_cpu_percent, 1),
        }  # fmt: skip

    def history(self) -> dict[str, Any]:
        """Every device's count of ``seq`` instances in history, summed, against every reading sent."""
        readings = entities = offset = 0
        while True:
            target = (
                f"/ngsi-ld/v1/temporal/entities?type={ENTITY_TYPE}&attrs=seq&timerel=after&timeAt=2000-01-01T00:00:00Z"
                f"&options=aggregatedValues&aggrMethods=totalCount&aggrPeriodDuration=PT0S&limit={HISTORY_PAGE}&offset={offset}"
            )
            request = http_request("GET", target, host=self.server.host, headers={"NGSILD-Tenant": TENANT})
            response = fetch_sync(HOST, self.server.port, request, 600)
            if response.status not in (200, 206):
                raise RuntimeError(f"GET {target} answered {response.status}: {response.body[:500]!r}")
            page = orjson.loads(response.body)
            readings += sum(bucket[0] for entity in page for bucket in entity.get("seq", {}).get("totalCount", []))
            entities, offset = entities + len(page), offset + HISTORY_PAGE
            if len(page) < HISTORY_PAGE:
                break
        return {"entities": entities, "readings": readings, "sent": self.sent_total, "lost": self.sent_total - readings}


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-ingest-"))
    broker = Broker(workdir)
    server = Server(workdir, workers=args.server_workers, backend=args.backend)
    results: dict[str, Any] = {"revision": git("rev-parse", "--short", "HEAD"), "devices": args.devices, "phases": []}
    try:
        broker.start()
        os.environ["CITYOPS_MQTT_URL"] = broker.url  # Server passes its environment on to cityops serve
        os.environ["CITYOPS_MQTT_CLIENT_ID"] = f"cityops-bench-gateway-{os.getpid()}"
        server.start()
        console.print(f"[dim]broker {broker.url} (pid {broker.process.pid if broker.process else '?'}), server pid {server.pid} on port "
                      f"{server.port}, {args.backend}, work dir {workdir}[/dim]")  # fmt: skip
        bench = Ingest(args, console, server, broker)
        try:
            started = time.monotonic()
            bench.provision()
            console.print(f"provisioned {args.devices:,} devices in {time.monotonic() - started:.1f} s")
        except (RuntimeError, OSError) as exc:
            raise RuntimeError(f"{exc}\nserver log:\n{server.log_text(3000)}") from None
        results["probe_s"] = round(bench.probe(), 2)
        console.print(f"the gateway stored a probe reading sent over MQTT after {results['probe_s']} s")
        try:
            for key in args.phases:
                if key == "http":
                    row = bench.http_phase()
                elif key == "overload":
                    row = bench.mqtt_phase(key, 1, 2 * args.rate1, args.overload_duration, memory=True)
                else:
                    row = bench.mqtt_phase(key, int(key[-1]), args.rate0 if key == "qos0" else args.rate1, args.duration)
                results["phases"].append(row)
            results["history"] = bench.history()
        except (RuntimeError, OSError) as exc:
            results["error"] = f"{type(exc).__name__}: {exc}"
        results["profiles"] = bench.profiles
    finally:
        server.stop()
        broker.stop()
        results["server_log"] = server.log_text(4000)
        results["broker_log"] = broker.log_text(2000)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


# -- report ----------------------------------------------------------------------------------
def ms_text(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:g}"


def report(results: dict[str, Any], console: Console) -> None:
    phases = {row["key"]: row for row in results["phases"]}
    table = Table(title=f"ingest through the IoT gateway ({results['devices']:,} devices, revision {results['revision']})")
    for column in ("phase", "offered", "sent", "sent/s", "stored", "lost", "dup/dead", "stored/s", "drain s",
                   "p50/p95/p99 ms", "CPU srv/gen/broker/other"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("phase", "offered") else "right")
    for row in phases.values():
        latency = row["receipt_to_stored_ms"]
        other = max(0.0, row["machine_cpu_percent"] - row["server_cpu_percent"] - row["generator_cpu_percent"] - row["broker_cpu_percent"])
        table.add_row(
            row["key"], row["offered"], f"{row['sent']:,}", f"{row['send_rate']:,.0f}", f"{row['stored']:,}",
            f"{row['lost']:,}", f"{row['duplicate']:,}/{row['dead_letter']:,}", f"{row['stored_per_s']:,.0f}", f"{row['drain_s']:g}",
            "/".join(ms_text(latency[p]) for p in ("p50", "p95", "p99")),
            f"{row['server_cpu_percent']:.0f}/{row['generator_cpu_percent']:.0f}/{row['broker_cpu_percent']:.0f}/{other:.0f} %",
        )  # fmt: skip
    console.print(table)
    targets = targets_table("ingest targets")
    for key, minimum in (("qos0", 20_000), ("qos1", 10_000)):
        if key in phases:
            row = phases[key]
            kept = row["send_rate"] >= 0.99 * minimum and row["lost"] == 0 and row["drain_s"] <= KEPT_PACE_S
            targets.add_row(
                f"{key} throughput",
                f"sent {row['send_rate']:,.0f}/s, stored {row['stored_per_s']:,.0f}/s, all stored {row['drain_s']:g} s after the last send",
                f">= {minimum:,} readings/s (kept pace: stored within {KEPT_PACE_S:g} s)",
                plain_verdict(kept),
            )
    for key in ("qos0", "qos1", "http"):
        if key in phases:
            p99 = phases[key]["receipt_to_stored_ms"]["p99"]
            targets.add_row(f"{key} receipt→stored", f"p99 {ms_text(p99)} ms", f"p99 <= {P99_LIMIT_MS:g} ms",
                            plain_verdict(not math.isnan(p99) and p99 <= P99_LIMIT_MS))  # fmt: skip
    if phases:
        lost = {key: row["lost"] for key, row in phases.items()}
        targets.add_row("stored == sent", ", ".join(f"{k} {v:,} lost" for k, v in lost.items()), "0 lost", plain_verdict(not any(lost.values())))
    if "history" in results:
        history = results["history"]
        targets.add_row(
            "history", f"{history['readings']:,} readings of {history['sent']:,} sent in {history['entities']:,} entities",
            "== sent", plain_verdict(history["lost"] == 0),
        )  # fmt: skip
    if "overload" in phases:
        row, memory = phases["overload"], phases["overload"]["memory"]
        targets.add_row(
            "overload (2× QoS 1 rate)",
            f"RSS {memory['start_mib']} → max {memory['max_mib']} → end {memory['end_mib']} MiB (2nd half {memory['growth_percent']:+} % "
            f"vs 1st), {row['lost']:,} lost, drained {row['drain_s']:g} s after sending; broker max {memory['broker_max_mib']} MiB",
            "flat (<= +10 %), 0 lost",
            plain_verdict(memory["flat"] and row["lost"] == 0),
        )
    console.print(targets)
    console.print(
        "[dim]sent/s: achieved send rate; stored/s: stored / (first send → all stored); drain: last send → all stored; "
        "p50/p95/p99: receipt by the gateway → commit, from the phase's histogram delta (interpolated within buckets); CPU: % of one "
        "core, server over first send → all stored, generator while sending.[/dim]"
    )
    for row in phases.values():
        for failure in row.get("http_failures", [])[:5]:
            console.print(f"[red]http: {failure['what']}[/red] {failure['response']!r}")
    if "error" in results:
        console.print(f"[red bold]stopped:[/red bold] {results['error']}")
        console.print(results["server_log"], results["broker_log"], markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = focused_parser("python -m bench.ingest", __doc__)
    parser.set_defaults(duration=30.0)
    parser.add_argument("--phases", default="qos0,qos1,http", help=f"comma-separated, of {','.join(PHASES)} (default qos0,qos1,http)")
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rate0", type=float, default=20_000.0, help="QoS 0 readings/s")
    parser.add_argument("--rate1", type=float, default=10_000.0, help="QoS 1 readings/s (overload: twice this)")
    parser.add_argument("--http-clients", type=int, default=8)
    parser.add_argument("--overload-duration", type=float, default=300.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="give up when the stored count has not grown for this long")
    parser.add_argument("--connections", type=int, default=4, help="MQTT connections of the generator")
    parser.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight per connection")
    parser.add_argument("--format", choices=("ul", "json"), default="ul", help="MQTT payloads: UltraLight 2.0 or JSON")
    parser.add_argument("--profile", type=Path, help="record the server with py-spy during each phase into DIR/<phase>.txt")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, server and broker logs)")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "200")  # piped: rich would squeeze the tables to 80 columns
    try:
        return run_and_report(args, run, report)
    except RuntimeError as exc:
        Console().print(f"[red bold]ingest benchmark stopped:[/red bold] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
