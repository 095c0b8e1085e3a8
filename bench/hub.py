"""The data hub benchmark: CityOps's NGSI-LD API measured over HTTP, as a client sees it.

``python -m bench.hub`` (``make bench``) starts ``cityops serve`` as a subprocess on a free port with
a fresh SQLite database in a temporary directory, waits for ``/health``, and drives it with
``bench.loadgen`` from this process. In order:

1. load the first 1,000 entities (one batch upsert, not measured);
2. **type+q @ 1k**: ``GET /entities?type=AirQualityObserved&q=pm10>150;status=="ok"&count=true``
   (default limit 20; about 3 % of the data matches), closed loop for throughput, then open loop
   at the target rate for latency;
3. **batch upsert**: load the rest of ``--entities`` (default 100,000) in batches of 1,000 through
   ``POST /entityOperations/upsert``; entities per second over the whole load;
4. **memory**: the server's VmRSS and VmHWM (peak) holding ``--entities`` entities;
5. **type+q @ 100k**: as in 2, over the full data set;
6. **near @ 100k**: ``GET /entities?georel=near;maxDistance==500&geometry=Point&coordinates=[lon,lat]
   &limit=20`` around random points in Anyang, closed loop, then open loop at the target rate;
7. **retrieve**: ``GET /entities/{id}`` of random loaded entities;
8. **partial update**: ``PATCH /entities/{id}/attrs/{pm10|pm25|temperature}`` with
   ``{"type":"Property","value":N}`` on random loaded entities;
9. **create**: ``POST /entities`` of new entities with distinct ids (into the loaded hub).

Every entity is an ``AirQualityObserved`` with six attributes (name, pm10, pm25, temperature,
status, refDevice) and a GeoProperty ``location`` inside lon 126.90-126.98, lat 37.36-37.44
(Anyang-si). Values derive from the entity's number, so every run loads the same data.

Each measured phase runs ``--duration`` seconds after ``--warmup`` seconds; the table shows the
server's CPU (all threads of the process; 100 % is one core busy), the generator's, and that of
everything else on the machine, because they all share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from rich.console import Console
from rich.table import Table

from .loadgen import (
    LoadResult,
    LoadSpec,
    RequestFactory,
    Response,
    event_loop_name,
    fetch_sync,
    http_request,
    run_load,
)
from .profile_summary import summarise_file

HOST = "127.0.0.1"
ENTITY_TYPE = "AirQualityObserved"
BATCH_SIZE = 1000
FIRST_LOAD = 1000
LON_MIN, LON_MAX, LAT_MIN, LAT_MAX = 126.90, 126.98, 37.36, 37.44
Q = 'pm10>150;status=="ok"'
NEAR_METRES = 500
OBSERVED_AT = "2026-05-01T09:00:00Z"
PATCHED_ATTRIBUTES = ("pm10", "pm25", "temperature")
FULL_SIZE = 100_000
SERVER_ENV = {
    "CITYOPS_MAX_BODY_BYTES": str(64 * 1024 * 1024),
    "CITYOPS_MAX_BATCH_SIZE": "10000",
}


# A PostgreSQL server where the benchmarks may create and drop their databases (--backend postgresql).
POSTGRES_ADMIN_URL = os.environ.get("CITYOPS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


def postgres_admin(statement: str) -> Any:
    """Run one statement on the admin database; its first value."""
    import asyncpg

    async def run() -> Any:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    return asyncio.run(run())


# -- data ------------------------------------------------------------------------------------
_MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64: a cheap, well-spread hash of an integer (deterministic pseudo-random numbers)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit(index: int, salt: int) -> float:
    """A number in [0, 1) fixed by (index, salt)."""
    return mix64(index * 64 + salt) / 2.0**64


def entity_id(index: int, prefix: str = "anyang") -> str:
    return f"urn:ngsi-ld:{ENTITY_TYPE}:{prefix}-{index:07d}"


def air_quality_entity(index: int, prefix: str = "anyang") -> dict[str, Any]:
    """Entity number ``index``: an AirQualityObserved in NGSI-LD normalized form.

    pm10 is log-normal (median 40 µg/m³, about 3.1 % above 150) and status is "ok" for 90 %,
    so ``pm10>150;status=="ok"`` selects about 2.8 % of the entities.
    """
    z = math.sqrt(-2.0 * math.log(1.0 - unit(index, 3))) * math.cos(2.0 * math.pi * unit(index, 4))
    pm10 = round(math.exp(3.7 + 0.7 * z))
    pm25 = round(pm10 * (0.45 + 0.2 * unit(index, 5)))
    draw = unit(index, 6)
    status = "ok" if draw < 0.90 else "maintenance" if draw < 0.96 else "fault"
    lon = round(LON_MIN + (LON_MAX - LON_MIN) * unit(index, 1), 6)
    lat = round(LAT_MIN + (LAT_MAX - LAT_MIN) * unit(index, 2), 6)
    return {
        "id": entity_id(index, prefix),
        "type": ENTITY_TYPE,
        "name": {"type": "Property", "value": f"Anyang air quality sensor {prefix}-{index}"},
        "pm10": {"type": "Property", "value": pm10, "unitCode": "GQ", "observedAt": OBSERVED_AT},
        "pm25": {"type": "Property", "value": pm25, "unitCode": "GQ", "observedAt": OBSERVED_AT},
        "temperature": {
            "type": "Property",
            "value": round(5.0 + 20.0 * unit(index, 7), 1),
            "unitCode": "CEL",
        },
        "status": {"type": "Property", "value": status},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{prefix}-aq-{index:07d}"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
    }


# -- requests --------------------------------------------------------------------------------
BASE = "/ngsi-ld/v1"
JSON_HEADERS = {"Content-Type": "application/json"}


def batch_bodies(host: str, first: int, end: int) -> list[bytes]:
    """Upsert requests for entities ``first`` to ``end - 1``, ``BATCH_SIZE`` a request."""
    return [
        http_request(
            "POST",
            f"{BASE}/entityOperations/upsert",
            host=host,
            headers=JSON_HEADERS,
            body=orjson.dumps([air_quality_entity(i) for i in range(start, min(end, start + BATCH_SIZE))]),
        )
        for start in range(first, end, BATCH_SIZE)
    ]


def query_target(*, count: bool = True, limit: int | None = None) -> str:
    target = f"{BASE}/entities?type={ENTITY_TYPE}&q={quote(Q, safe='')}"
    if count:
        target += "&count=true"
    if limit is not None:
        target += f"&limit={limit}"
    return target


def near_target(lon: float, lat: float, *, limit: int = 20, count: bool = False) -> str:
    georel = quote(f"near;maxDistance=={NEAR_METRES}", safe="")
    coordinates = quote(f"[{lon:.5f},{lat:.5f}]", safe="")
    target = f"{BASE}/entities?georel={georel}&geometry=Point&coordinates={coordinates}&limit={limit}"
    return target + ("&count=true" if count else "")


def random_point(seq: int) -> tuple[float, float]:
    return LON_MIN + (LON_MAX - LON_MIN) * unit(seq, 11), LAT_MIN + (LAT_MAX - LAT_MIN) * unit(seq, 12)


def create_factory(host: str) -> RequestFactory:
    """A new entity per request: ids ``…:create-<seq>``, never loaded before."""
    head = f"POST {BASE}/entities HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n".encode()

    def make(seq: int) -> bytes:
        body = orjson.dumps(air_quality_entity(seq, prefix="create"))
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    return make


def patch_factory(host: str, entities: int) -> RequestFactory:
    """A partial update of pm10, pm25 or temperature of a random loaded entity."""
    heads = [
        (
            f"PATCH {BASE}/entities/urn:ngsi-ld:{ENTITY_TYPE}:anyang-%07d/attrs/{name} HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        ).encode()
        for name in PATCHED_ATTRIBUTES
    ]

    def make(seq: int) -> bytes:
        mixed = mix64(seq)
        body = b'{"type":"Property","value":%d}' % ((mixed >> 40) % 200)
        return heads[seq % len(heads)] % (mixed % entities, len(body)) + body

    return make


def retrieve_factory(host: str, entities: int) -> RequestFactory:
    """A retrieve of a random loaded entity (normalized, the default)."""
    template = (
        f"GET {BASE}/entities/urn:ngsi-ld:{ENTITY_TYPE}:anyang-%07d HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    return lambda seq: template % (mix64(seq) % entities)


def fixed_factory(data: bytes) -> RequestFactory:
    return lambda seq: data


def near_factory(host: str) -> RequestFactory:
    """A near-query around a random point in Anyang."""

    def make(seq: int) -> bytes:
        return f"GET {near_target(*random_point(seq))} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    return make


# -- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def header_value(response: Response, name: str) -> str | None:
    """The value of a response header (case-insensitive), if present."""
    wanted = name.lower().encode() + b":"
    for line in response.head.split(b"\r\n")[1:]:
        if line.lower().startswith(wanted):
            return line[len(wanted) :].strip().decode("latin-1")
    return None


REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    """Output of a git command in the repository ('' if it fails)."""
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def export_revision(revision: str, destination: Path) -> str:
    """Extract ``src/`` of a git revision into ``destination`` (the repository is only read); its commit."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    if not commit:
        raise RuntimeError(f"{revision!r} is not a commit of {REPO}")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src"], cwd=REPO, capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(destination, filter="data")
        else:
            tar.extractall(destination)  # our own repository's archive
    return commit


class Server:
    """``cityops serve`` as a subprocess: start, health, CPU and memory from /proc, stop.

    With ``source``, the server imports CityOps from that directory (put first on PYTHONPATH)
    instead of the installed working tree.
    """

    def __init__(self, workdir: Path, source: Path | None = None, workers: int = 1, backend: str = "sqlite"):
        self.workdir = workdir
        self.source = source
        self.workers = workers
        self.backend = backend
        self.database = str(workdir / "bench.db")
        self._postgres_name: str | None = None
        self.log_path = workdir / "server.log"
        self.port = free_port()
        self.host = f"{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.imported_from = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        if self.backend == "postgresql" and self._postgres_name is None:
            self._postgres_name = f"cityops_bench_{os.getpid()}_{self.port}"
            postgres_admin(f"CREATE DATABASE {self._postgres_name}")
            self.database = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + self._postgres_name
        env = {**os.environ, **SERVER_ENV}
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(self.source), os.environ.get("PYTHONPATH")])
            )
        self.imported_from = subprocess.run(
            [sys.executable, "-c", "import cityops; print(cityops.__file__)"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if self.source is not None and not self.imported_from.startswith(str(self.source)):
            raise RuntimeError(
                f"the server would import CityOps from {self.imported_from}, not {self.source}"
            )
        command = [
            sys.executable, "-m", "cityops", "serve",
            "--host", HOST, "--port", str(self.port), "--database", str(self.database), "--log-level", "warning",
            "--workers", str(self.workers),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if (
                    fetch_sync(HOST, self.port, http_request("GET", "/health", host=self.host), 2.0).status
                    == 200
                ):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{self.log_text()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The server process and, with --workers, its worker processes (and theirs)."""
        found, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole server (all processes, all threads) so far."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident) in KiB, summed over the server's processes."""
        found = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] += int(value.split()[0])
        return found

    def log_text(self, tail: int = 12000) -> str:
        try:
            return self.log_path.read_bytes()[-tail:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._postgres_name is not None:
            postgres_admin(f"DROP DATABASE IF EXISTS {self._postgres_name} WITH (FORCE)")
            self._postgres_name = None

    def get(self, target: str) -> Response:
        return fetch_sync(HOST, self.port, http_request("GET", target, host=self.host))

    def database_bytes(self) -> int:
        if self._postgres_name is not None:
            return int(postgres_admin(f"SELECT pg_database_size('{self._postgres_name}')") or 0)
        return sum(p.stat().st_size for p in self.workdir.glob("bench.db*") if p.is_file())


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already inside user time
    idle = values[3] + values[4]
    return total - idle, total


class WindowSampler:
    """The hook the load generator calls at the window's edges: server and machine CPU in between.

    Optionally starts py-spy on the server for the length of the window.
    """

    def __init__(self, server: Server, profile_to: Path | None = None, profile_seconds: int = 0):
        self.server = server
        self.profile_to = profile_to
        self.profile_seconds = profile_seconds
        self.profiler: subprocess.Popen[bytes] | None = None
        self.server_cpu_percent = math.nan
        self.machine_cpu_percent = math.nan
        self._start: tuple[float, float, tuple[int, int]] | None = None

    def __call__(self, edge: str) -> None:
        now, cpu, machine = time.monotonic(), self.server.cpu_seconds(), machine_cpu_ticks()
        if edge == "start":
            self._start = (now, cpu, machine)
            if self.profile_to is not None:
                self.profiler = start_profiler(self.server.pid, self.profile_to, self.profile_seconds)
            return
        assert self._start is not None
        wall0, cpu0, (busy0, total0) = self._start
        self.server_cpu_percent = 100.0 * (cpu - cpu0) / max(1e-9, now - wall0)
        busy, total = machine
        self.machine_cpu_percent = 100.0 * (os.cpu_count() or 1) * (busy - busy0) / max(1, total - total0)

    def wait_profiler(self) -> None:
        if self.profiler is not None:
            try:
                self.profiler.wait(self.profile_seconds + 30)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
                self.profiler.wait()


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profiler(pid: int, output: Path, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy sampling all threads of the server at 100 Hz without pausing it; raw stacks to ``output``."""
    py_spy = py_spy_path()
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100",
        "--nonblocking", "--threads", "--format", "raw", "--output", str(output),
    ]  # fmt: skip
    with open(output.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


# -- targets and rows ------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the report: a measured run, its CPU context, and its target."""

    key: str
    label: str
    result: LoadResult
    server_cpu_percent: float
    machine_cpu_percent: float
    target: str = "—"
    passed: bool | None = None
    rate_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def other_cpu_percent(self) -> float:
        """CPU used by everything but the server and the generator (other work on the machine)."""
        return max(
            0.0, self.machine_cpu_percent - self.server_cpu_percent - self.result.generator_cpu_percent
        )

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            **self.result.summary(),
            "server_cpu_percent": round(self.server_cpu_percent, 1),
            "machine_cpu_percent": round(self.machine_cpu_percent, 1),
            "other_cpu_percent": round(self.other_cpu_percent, 1),
            "target": self.target,
            "passed": self.passed,
            **self.extra,
        }


def fmt_count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


class Benchmark:
    """Runs the phases against one server and collects the rows."""

    def __init__(self, args: argparse.Namespace, server: Server, console: Console):
        self.args = args
        self.server = server
        self.console = console
        self.rows: list[Row] = []
        self.data: dict[str, Any] = {}
        self.memory: dict[str, Any] = {}
        self.profiles: dict[str, str] = {}

    # -- running one phase -------------------------------------------------------------------
    def run(
        self,
        key: str,
        label: str,
        factory: RequestFactory,
        expected: set[int],
        *,
        rate: float | None = None,
        requests: int | None = None,
        concurrency: int | None = None,
        units_per_request: int = 1,
    ) -> Row:
        args = self.args
        if args.wait_quiet > 0:
            self.wait_quiet(args.wait_quiet)
        profile_to = None
        if args.profile and key in args.profile_phases:
            profile_to = Path(args.profile) / f"{key}.txt"
        sampler = WindowSampler(self.server, profile_to, max(1, int(args.duration)))
        spec = LoadSpec(
            name=label,
            host=HOST,
            port=self.server.port,
            make_request=factory,
            expected_status=frozenset(expected),
            concurrency=concurrency or (args.open_connections if rate else args.concurrency),
            duration=args.duration,
            warmup=args.warmup,
            rate=rate,
            requests=requests,
            processes=args.generator_processes,
            units_per_request=units_per_request,
        )
        what = f"{rate:g} req/s open loop" if rate else f"{requests} requests" if requests else "closed loop"
        self.console.print(f"[dim]… {label}: {what}, {spec.concurrency} connections[/dim]")
        result = run_load(spec, sampler)
        sampler.wait_profiler()
        if profile_to is not None:
            self.profiles[key] = str(profile_to)
        if not self.server.alive():
            raise RuntimeError(f"the server died during {label}:\n{self.server.log_text()}")
        row = Row(key, label, result, sampler.server_cpu_percent, sampler.machine_cpu_percent)
        self.rows.append(row)
        return row

    def wait_quiet(self, limit_s: float, threshold: float = 20.0) -> None:
        """Wait (up to ``limit_s``) until work other than the server takes under ``threshold`` % of a core."""
        waited = 0.0
        while True:
            busy0, total0 = machine_cpu_ticks()
            server0 = self.server.cpu_seconds()
            time.sleep(1.0)
            busy, total = machine_cpu_ticks()
            machine = 100.0 * (os.cpu_count() or 1) * (busy - busy0) / max(1, total - total0)
            other = machine - 100.0 * (self.server.cpu_seconds() - server0)
            if other < threshold:
                return
            waited += 1.0
            if waited == 1.0:
                self.console.print(
                    f"[yellow]… other work is using {other:.0f} % of a core; waiting for quiet[/yellow]"
                )
            if waited >= limit_s:
                self.console.print(
                    f"[yellow]… still {other:.0f} % after {limit_s:g} s; measuring anyway[/yellow]"
                )
                return

    @staticmethod
    def at_least(row: Row, minimum: float, unit_name: str = "req/s", value: float | None = None) -> None:
        achieved = row.result.throughput if value is None else value
        row.target = f"≥ {minimum:,.0f} {unit_name}"
        row.passed = achieved >= minimum and row.result.unexpected == 0 and row.result.connection_errors == 0

    @staticmethod
    def p95_within(row: Row, limit_ms: float) -> None:
        result = row.result
        rate = result.rate or 0.0
        row.target = f"p95 ≤ {limit_ms:g} ms at {rate:g} req/s"
        row.passed = (
            result.percentile_ms(95) <= limit_ms
            and result.throughput >= 0.97 * rate
            and result.unexpected == 0
            and result.connection_errors == 0
        )

    # -- the phases --------------------------------------------------------------------------
    def check_loaded(self, expected: int) -> None:
        response = self.server.get(f"{BASE}/entities?type={ENTITY_TYPE}&count=true&limit=0")
        count = header_value(response, "NGSILD-Results-Count")
        if response.status != 200 or count is None or int(count) != expected:
            raise RuntimeError(f"expected {expected} entities after loading, the hub says: {response.head!r}")

    def probe_selectivity(self, entities: int) -> dict[str, Any]:
        """How many entities the type+q query matches (the figure that makes the query selective)."""
        response = self.server.get(query_target(count=True, limit=0))
        matched = int(header_value(response, "NGSILD-Results-Count") or -1)
        return {"entities": entities, "matched": matched, "fraction": round(matched / entities, 4)}

    def probe_near(self, samples: int = 50) -> dict[str, Any]:
        """How many entities a near-query matches on average (it returns at most 20 of them)."""
        counts = []
        for seq in range(samples):
            response = self.server.get(near_target(*random_point(10**9 + seq), limit=0, count=True))
            counts.append(int(header_value(response, "NGSILD-Results-Count") or -1))
        return {
            "samples": samples,
            "mean_matched": round(sum(counts) / samples, 1),
            "min": min(counts),
            "max": max(counts),
        }

    def memory_now(self, label: str) -> dict[str, Any]:
        kib = self.server.memory_kib()
        record = {
            "label": label,
            "rss_mib": round(kib["VmRSS"] / 1024, 1),
            "hwm_mib": round(kib["VmHWM"] / 1024, 1),
        }
        record["database_mib"] = round(self.server.database_bytes() / 2**20, 1)
        return record

    def type_q(self, size_label: str, key: str, entities: int, targeted: bool) -> None:
        host = self.server.host
        request = http_request("GET", query_target(), host=host)
        self.data[f"selectivity_{key}"] = self.probe_selectivity(entities)
        closed = self.run(key, f"type+q, {size_label} entities", fixed_factory(request), {200})
        opened = self.run(
            f"{key}_open",
            f"type+q, {size_label}, at {self.args.q_rate:g}/s",
            fixed_factory(request),
            {200},
            rate=self.args.q_rate,
        )
        if targeted:
            self.at_least(closed, 300)
            self.p95_within(opened, 50)

    def all(self) -> None:
        args, host = self.args, self.server.host
        entities = args.entities
        size = fmt_count(entities)
        console = self.console

        first = min(FIRST_LOAD, entities)
        for request in batch_bodies(host, 0, first):
            response = fetch_sync(HOST, self.server.port, request)
            if response.status not in (201, 204):
                raise RuntimeError(f"the first batch failed: {response.head!r} {response.body[:2000]!r}")
        self.check_loaded(first)
        self.type_q(fmt_count(first), "type_q_1k", first, targeted=False)

        if entities > first:
            console.print(f"[dim]… building {entities - first:,} entities in batches of {BATCH_SIZE:,}[/dim]")
            bodies = batch_bodies(host, first, entities)
            row = self.run(
                "batch_upsert",
                f"batch upsert {fmt_count(first)}→{size}",
                lambda seq: bodies[seq],
                {201, 204},
                requests=len(bodies),
                concurrency=min(args.batch_concurrency, len(bodies)),
                units_per_request=BATCH_SIZE,
            )
            per_second = (entities - first) / row.result.window_s if row.result.window_s > 0 else 0.0
            row.rate_text = f"{per_second:,.0f} ent/s"
            row.extra["entities_per_s"] = round(per_second, 1)
            self.at_least(row, 30_000, "ent/s", per_second)
            del bodies
        self.check_loaded(entities)
        self.memory["loaded"] = self.memory_now(f"holding {entities:,} entities")
        self.memory["loaded"]["entities"] = entities

        self.type_q(size, "type_q_full", entities, targeted=True)

        self.data["near"] = self.probe_near()
        near = self.run("near", f"near {NEAR_METRES} m, {size}", near_factory(host), {200})
        self.at_least(near, 500)
        near_open = self.run(
            "near_open", f"near {NEAR_METRES} m, {size}, at {args.near_rate:g}/s", near_factory(host), {200},
            rate=args.near_rate,
        )  # fmt: skip
        self.p95_within(near_open, 30)

        self.at_least(self.run("retrieve", "retrieve by id", retrieve_factory(host, entities), {200}), 4000)
        self.at_least(self.run("patch", "partial attr update", patch_factory(host, entities), {204}), 3000)
        self.at_least(self.run("create", "create", create_factory(host), {201}), 2000)
        self.memory["end"] = self.memory_now("at the end (after the creates)")


# -- reporting -------------------------------------------------------------------------------
def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Console], dict[str, Any]],
    report: Callable[[dict[str, Any], Console], None],
) -> int:
    """The shape of every focused benchmark's main: run, print the table, keep the figures if asked
    (``args.json``)."""
    console = Console()
    results = run(args, console)
    report(results, console)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


def focused_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every focused benchmark (bench.notify, bench.temporal) shares."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured phase")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite", help="store of the server (postgresql: a fresh database, dropped after)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser


def targets_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("phase", "figure", "target", "verdict"):
        table.add_column(column)
    return table


def plain_verdict(passed: bool) -> str:
    return "met" if passed else "NOT met"


def verdict(passed: bool | None) -> str:
    if passed is None:
        return "[dim]info[/dim]"
    return "[green]PASS[/green]" if passed else "[red]FAIL[/red]"


def ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def report(bench: Benchmark, console: Console, rss_limit_mib: float) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    table = Table(title=f"CityOps hub over HTTP ({cores} cores shared by server, load generator and others)")
    for name, justify in (
        ("phase", "left"), ("load", "left"), ("answers", "right"), ("rate", "right"), ("p50", "right"),
        ("p95", "right"), ("p99", "right"), ("max ms", "right"), ("errors", "right"),
        ("CPU srv/gen/other", "right"), ("target", "left"), ("", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in bench.rows:
        r = row.result
        load = f"{r.rate:g}/s open" if r.mode == "open" else f"c={r.concurrency}"
        answers = f"{r.completed:,}" + (f" +{r.backlog:,} unsent" if r.backlog else "")
        errors = r.unexpected + r.connection_errors
        other = f"{row.other_cpu_percent:.0f}"
        table.add_row(
            row.label,
            load,
            answers,
            row.rate_text or f"{r.throughput:,.0f}/s",
            ms(r.percentile_ms(50)),
            ms(r.percentile_ms(95)),
            ms(r.percentile_ms(99)),
            ms(r.percentile_ms(100)),
            f"[red]{errors}[/red]" if errors else "0",
            f"{row.server_cpu_percent:.0f}/{r.generator_cpu_percent:.0f}/"
            + (f"[yellow]{other}[/yellow]" if row.other_cpu_percent >= 20 else other)
            + "%",
            row.target,
            verdict(row.passed),
        )
    memory = bench.memory.get("loaded")
    if memory:
        passed = memory["rss_mib"] <= rss_limit_mib
        table.add_row(
            f"RSS, {memory['entities']:,} entities",
            "", "", f"{memory['rss_mib']:,.0f} MiB", "", "", "", "", "", "",
            f"≤ {rss_limit_mib:g} MiB", verdict(passed),
        )  # fmt: skip
        memory["target_mib"] = rss_limit_mib
        memory["passed"] = passed
    console.print(table)
    for found in bench.memory.values():
        console.print(
            f"memory {found['label']}: RSS {found['rss_mib']:,.1f} MiB, peak (VmHWM) {found['hwm_mib']:,.1f} MiB, "
            f"database files {found['database_mib']:,.1f} MiB"
        )
    for key, found in bench.data.items():
        if key.startswith("selectivity"):
            console.print(
                f"q={Q} matches {found['matched']:,} of {found['entities']:,} entities ({100 * found['fraction']:.1f} %)"
            )
        elif key == "near":
            console.print(
                f"near {NEAR_METRES} m matches {found['mean_matched']:,.0f} entities on average "
                f"(min {found['min']}, max {found['max']}, {found['samples']} random points); the page holds 20"
            )
    if bench.args.entities != FULL_SIZE:
        console.print(
            f"[yellow]targets are defined at {FULL_SIZE:,} entities; this run used {bench.args.entities:,}[/yellow]"
        )
    console.print(
        "[dim]rate: answers per second in the measured window (batch: entities per second). Latencies in ms: "
        "closed loop (c=connections) from send to answer; open loop (n/s) from when the request was due, "
        "unsent ones counted with their wait so far. errors: unexpected statuses + connection errors. CPU: % of "
        "one core for the server (all its threads), the generator and everything else on the machine; "
        "yellow when other work took ≥ 20 % of a core and may have skewed the phase.[/dim]"
    )
    failures = [(row.label, f) for row in bench.rows for f in row.result.failures]
    if failures:
        console.print("[red bold]Unexpected answers (first few per phase):[/red bold]")
        for label, failure in failures:
            console.print(f"[red]{label}: {failure['what']}[/red]")
            console.print("  request:  " + repr(failure["request"]))
            console.print("  response: " + repr(failure["response"]))
    return {
        "phases": [row.summary() for row in bench.rows],
        "memory": bench.memory,
        "data": bench.data,
        "profiles": bench.profiles,
    }


def environment() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_head": git("rev-parse", "HEAD"),
        "src_dirty_at_start": bool(git("status", "--porcelain", "--", "src")),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "load_average_before": os.getloadavg(),
        "generator_event_loop": event_loop_name(),
    }


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hub", description="Benchmark the CityOps hub's NGSI-LD API over HTTP."
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds measured per phase (default 10; 2 with --quick)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of warm-up per phase (default 2; 0.5 with --quick)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="connections in closed-loop phases (default 16)"
    )
    parser.add_argument(
        "--open-connections", type=int, default=32, help="connections in open-loop phases (default 32)"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=2, help="connections loading batches (default 2)"
    )
    parser.add_argument(
        "--entities",
        type=int,
        default=None,
        help=f"entities to load (default {FULL_SIZE:,}; 10,000 with --quick)",
    )
    parser.add_argument(
        "--q-rate", type=float, default=300.0, help="open-loop rate of the type+q latency runs (300)"
    )
    parser.add_argument(
        "--near-rate", type=float, default=500.0, help="open-loop rate of the near latency run (500)"
    )
    parser.add_argument(
        "--generator-processes", type=int, default=1, help="load generator processes (default 1)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to SECONDS until other processes use < 20 %% of a core (default 0: no wait)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of about 30 s: fewer entities, short phases"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--profile", metavar="DIR", help="record py-spy profiles of the server into DIR (raw stacks)"
    )
    parser.add_argument(
        "--profile-phases",
        default="retrieve,create",
        help="comma-separated phase keys to profile (retrieve, patch, create, near, type_q_full, …)",
    )
    parser.add_argument(
        "--rev",
        metavar="REVISION",
        help="benchmark src/ of this git revision (e.g. HEAD), extracted to the temporary directory, "
        "instead of the working tree",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (database and server log)"
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, metavar="N", help="server processes (cityops serve --workers N; default 1)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="sqlite",
        help="the server's store: sqlite (a fresh file) or postgresql (a fresh database on CITYOPS_BENCH_POSTGRES_URL's server, dropped after)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.entities = args.entities if args.entities is not None else (10_000 if args.quick else FULL_SIZE)
    args.profile_phases = {p.strip() for p in args.profile_phases.split(",") if p.strip()}
    if args.entities < 1:
        parser.error("--entities must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 180)  # piped: do not squeeze the table to 80
    workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-"))
    env = environment()
    source = None
    if args.rev:
        source = workdir / "src"
        env["server_source"] = f"git revision {args.rev} = {export_revision(args.rev, workdir)}"
    else:
        env["server_source"] = "working tree" + (
            " (src/ has uncommitted changes)" if env["src_dirty_at_start"] else ""
        )
    server = Server(workdir, source, workers=args.server_workers, backend=args.backend)
    console.print(
        f"[bold]CityOps hub benchmark[/bold] on {args.backend}: {args.entities:,} entities, {args.duration:g} s per phase after "
        f"{args.warmup:g} s warm-up, {args.concurrency} connections (closed loop), generator: "
        f"{args.generator_processes} process(es) on {env['generator_event_loop']}; "
        f"load average before {env['load_average_before'][0]:.2f}"
    )
    started = time.monotonic()
    bench = Benchmark(args, server, console)
    status = 0
    try:
        server.start()
        console.print(
            f"[dim]server pid {server.pid} ({server.workers} worker process(es)) on port {server.port}, database {server.database}, "
            f"CityOps from {env['server_source']}: {server.imported_from}[/dim]"
        )
        bench.all()
    except Exception as exc:  # noqa: BLE001 (report what was measured so far, then the failure)
        console.print_exception() if not isinstance(exc, RuntimeError) else None
        console.print(f"[red bold]benchmark stopped:[/red bold] {exc}")
        status = 1
    finally:
        server.stop()
    results = report(bench, console, rss_limit_mib=500)
    log = server.log_text()
    if log.strip():
        console.print("[yellow]server log (warnings and errors):[/yellow]")
        console.print(log, markup=False, highlight=False)
    for key, path in bench.profiles.items():
        if Path(path).exists():
            summary = summarise_file(Path(path), top=15)
            Path(path).with_suffix(".summary.txt").write_text(summary)
            console.print(f"[bold]profile of the server during {key}[/bold] ({path}):")
            console.print(summary, markup=False, highlight=False)
    console.print(
        f"[dim]total {time.monotonic() - started:.0f} s; work dir {workdir}{' (kept)' if args.keep else ''}[/dim]"
    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        document = {
            "environment": env,
            "arguments": {k: v if not isinstance(v, set) else sorted(v) for k, v in vars(args).items()},
            **results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        console.print(f"results written to {args.json}")
    if any(row.result.unexpected or row.result.connection_errors for row in bench.rows):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
