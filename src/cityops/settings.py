"""One settings object for the whole process.

Every setting has a default, an environment variable (``CITYOPS_*``) and usually a CLI flag.
A CLI flag beats the environment, the environment beats the default. ``docs/configuration.md``
lists them all; ``Settings.describe()`` prints the same table from this file, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected one of 1/0, true/false, yes/no, on/off, got {text!r}")


def parse_preload_contexts(text: str) -> dict[str, Path]:
    """Parse ``URL=FILE,URL=FILE`` into a mapping of context URL to local file."""
    pairs: dict[str, Path] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        url, sep, path = item.partition("=")
        if not sep or not url or not path:
            raise ValueError(f"expected URL=FILE, got {item!r}")
        pairs[url.strip()] = Path(path.strip())
    return pairs


def parse_retention(text: str) -> dict[str, float]:
    """Parse ``Vehicle=P30D,*=P1Y`` into seconds per entity type name ('*': every other type)."""
    from .hub.temporal import parse_duration

    periods: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, duration = (piece.strip() for piece in item.partition("="))
        if not sep or not name or not duration:
            raise ValueError(f"expected TYPE=DURATION (e.g. Vehicle=P30D or *=P1Y), got {item!r}")
        try:
            seconds = parse_duration(duration)
        except Exception:
            raise ValueError(f"{duration!r} is not an ISO 8601 duration such as P30D") from None
        if seconds <= 0:
            raise ValueError(f"the retention of {name} must be longer than zero")
        periods[name] = seconds
    return periods


def _setting(default: Any, env: str, help: str, parse: Any = str) -> Any:
    return field(default=default, metadata={"env": env, "help": help, "parse": parse})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "CITYOPS_HOST", "Address the HTTP server listens on.")
    port: int = _setting(1026, "CITYOPS_PORT", "TCP port of the HTTP server (1026, as NGSI-LD brokers use).", int)
    database: str = _setting(
        "cityops.db",
        "CITYOPS_DATABASE",
        "Where the hub keeps its data: a SQLite file path (default), or ':memory:' for a throw-away hub. "
        "Other tenants live in files beside it (<database>.tenants/<tenant>.db).",
    )
    database_url: str = _setting(
        "",
        "CITYOPS_DATABASE_URL",
        "A PostgreSQL database (with PostGIS) instead of the SQLite file: postgresql://user:password@host:port/name. "
        "`--database postgresql://...` does the same. The schema is created and migrated at start-up.",
    )
    db_pool_size: int = _setting(10, "CITYOPS_DB_POOL_SIZE", "PostgreSQL connections each server process keeps at most.", int)
    db_timeout: float = _setting(
        5.0, "CITYOPS_DB_TIMEOUT",
        "Seconds to wait for a PostgreSQL connection (statements get six times as long); past it the request "
        "gets 503 instead of waiting.", float,
    )  # fmt: skip
    log_level: str = _setting("info", "CITYOPS_LOG_LEVEL", "debug, info, warning or error.")
    workers: int = _setting(
        1,
        "CITYOPS_WORKERS",
        "Server processes sharing the port and the database (one a core is a good start). Each has its own "
        "event loop, so reads scale with cores; SQLite still takes one write transaction at a time.",
        int,
    )
    preload_contexts: dict[str, Path] = _setting(
        None,
        "CITYOPS_PRELOAD_CONTEXTS",
        "User @context documents served from local files instead of the network, as URL=FILE pairs "
        "separated by commas (the CLI flag --preload-context URL=FILE is repeatable).",
        parse_preload_contexts,
    )
    context_fetch_timeout: float = _setting(
        5.0, "CITYOPS_CONTEXT_FETCH_TIMEOUT", "Seconds to wait for a remote @context before answering 503.", float
    )
    context_cache_size: int = _setting(
        256, "CITYOPS_CONTEXT_CACHE_SIZE", "How many resolved @context documents are kept in memory.", int
    )
    max_body_bytes: int = _setting(
        4 * 1024 * 1024, "CITYOPS_MAX_BODY_BYTES", "Largest request body accepted; larger ones get 413.", int
    )
    default_page_size: int = _setting(20, "CITYOPS_DEFAULT_PAGE_SIZE", "Entities per page when no limit is given.", int)
    max_page_size: int = _setting(
        1000, "CITYOPS_MAX_PAGE_SIZE", "Largest limit a query may ask for; more gets 403 TooManyResults.", int
    )
    max_batch_size: int = _setting(
        10000, "CITYOPS_MAX_BATCH_SIZE", "Largest number of entities in one batch operation.", int
    )
    sqlite_synchronous: str = _setting(
        "NORMAL",
        "CITYOPS_SQLITE_SYNCHRONOUS",
        "SQLite synchronous mode. NORMAL (default, WAL) survives a process crash; FULL also survives power loss.",
    )
    max_tenants: int = _setting(100, "CITYOPS_MAX_TENANTS", "Most tenants (NGSILD-Tenant values) served at once; each has its own database file.", int)
    sqlite_cache_mb: int = _setting(64, "CITYOPS_SQLITE_CACHE_MB", "SQLite page cache of the writer connection per tenant database, in MiB; each reader connection gets a quarter.", int)
    temporal_instance_limit: int = _setting(
        10000, "CITYOPS_TEMPORAL_INSTANCE_LIMIT",
        "Most instances of one attribute in one temporal answer; beyond it the answer is paginated (206 and Content-Range, "
        "ETSI GS CIM 009 clause 6.3.10). Aggregations are not limited.", int,
    )  # fmt: skip
    history_retention: str = _setting(
        "", "CITYOPS_HISTORY_RETENTION",
        "How long history is kept, per entity type: TYPE=DURATION pairs (ISO 8601), '*' for every other type, "
        "e.g. 'Person=P30D,Vehicle=P90D,*=P5Y'. Empty: kept forever. Older instances are removed every 10 minutes.",
    )  # fmt: skip
    notify_timeout: float = _setting(
        10.0, "CITYOPS_NOTIFY_TIMEOUT", "Seconds a notification receiver (HTTP or MQTT broker) has to accept one notification.", float
    )
    notify_backoff_max: float = _setting(
        60.0, "CITYOPS_NOTIFY_BACKOFF_MAX",
        "Longest wait, in seconds, between retries of a notification that could not be delivered (waits double from 1 s). "
        "Undelivered notifications are kept and retried until delivered or their subscription is deleted.", float,
    )  # fmt: skip

    mqtt_url: str = _setting(
        "", "CITYOPS_MQTT_URL",
        "The MQTT broker the IoT gateway takes device measures from and sends commands through: "
        "mqtt://user:password@host:1883 (mqtts:// for TLS). Empty: no MQTT intake (HTTP ingest still works).",
    )  # fmt: skip
    mqtt_client_id: str = _setting(
        "cityops-gateway", "CITYOPS_MQTT_CLIENT_ID",
        "The gateway's MQTT client id. Its session is persistent, so QoS 1 measures sent while the gateway is down "
        "wait in the broker; two processes must not share one id.",
    )  # fmt: skip
    mqtt_ca_file: str = _setting("", "CITYOPS_MQTT_CA_FILE", "CA certificates to verify an mqtts:// broker with (default: the system's).")
    iot_context: str = _setting(
        "", "CITYOPS_IOT_CONTEXT",
        "The @context (URL, preloaded or fetchable) that expands the attribute names of devices and service groups; "
        "empty: the NGSI-LD core context (names go to the default vocabulary).",
    )  # fmt: skip
    ingest_queue: int = _setting(
        40000, "CITYOPS_INGEST_QUEUE",
        "Most measure messages the gateway holds before storing them. When it is full the gateway stops reading "
        "from the broker and HTTP ingest waits: intake slows, memory stays bounded, nothing is dropped.", int,
    )  # fmt: skip
    ingest_batch: int = _setting(
        20000, "CITYOPS_INGEST_BATCH",
        "Most measure messages stored in one transaction. A batch is whatever waits, up to this: small while the "
        "gateway keeps up, large when it falls behind, where one device's readings share one entity write.", int,
    )  # fmt: skip
    ingest_max_payload: int = _setting(
        65536, "CITYOPS_INGEST_MAX_PAYLOAD", "Largest measure payload (bytes) a device may send; larger ones are dead letters.", int
    )
    dead_letters_kept: int = _setting(
        10000, "CITYOPS_DEAD_LETTERS_KEPT", "Dead letters (rejected measures, with the reason) kept per tenant; older ones are removed.", int
    )

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL database to use, if one is configured (else the SQLite file ``database``)."""
        for candidate in (self.database_url, self.database):
            if candidate.startswith(("postgresql://", "postgres://")):
                return candidate
        return None

    def __post_init__(self) -> None:
        if self.preload_contexts is None:
            object.__setattr__(self, "preload_contexts", {})
        if not 1 <= self.workers <= 64:
            raise SettingsError(f"workers must be between 1 and 64, got {self.workers}")
        if self.db_pool_size < 1 or self.db_timeout <= 0:
            raise SettingsError("db_pool_size must be >= 1 and db_timeout > 0")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise SettingsError(f"database_url must start with postgresql://, got {self.database_url!r}")
        if self.workers > 1 and self.database == ":memory:" and not self.database_url:
            raise SettingsError("a ':memory:' database cannot be shared by several workers; give a file with --database")
        if not 0 < self.port < 65536:
            raise SettingsError(f"port must be between 1 and 65535, got {self.port}")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if self.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise SettingsError(f"sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA, got {self.sqlite_synchronous!r}")
        try:
            parse_retention(self.history_retention)
        except ValueError as exc:
            raise SettingsError(f"history_retention (CITYOPS_HISTORY_RETENTION): {exc}") from None
        if self.notify_timeout <= 0 or self.notify_backoff_max < 1:
            raise SettingsError("notify_timeout must be > 0 and notify_backoff_max >= 1 second")
        if self.default_page_size < 1 or self.max_page_size < self.default_page_size:
            raise SettingsError("default_page_size must be >= 1 and <= max_page_size")
        if self.mqtt_url and not self.mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise SettingsError(f"mqtt_url must start with mqtt:// or mqtts://, got {self.mqtt_url!r}")
        if self.ingest_queue < 1 or not 1 <= self.ingest_batch <= self.ingest_queue:
            raise SettingsError("ingest_queue must be >= 1 and ingest_batch between 1 and ingest_queue")
        for url, path in self.preload_contexts.items():
            if not Path(path).is_file():
                raise SettingsError(f"preloaded @context {url} points at {path}, which is not a readable file")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CITYOPS_*`` variables, then explicit overrides (CLI flags); ``None`` overrides are ignored."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            env_name = spec.metadata["env"]
            if env_name in environ and environ[env_name] != "":
                parse = spec.metadata["parse"]
                try:
                    values[spec.name] = _parse_bool(environ[env_name]) if parse is bool else parse(environ[env_name])
                except ValueError as exc:
                    raise SettingsError(f"{env_name}: {exc}") from None
        for name, value in overrides.items():
            if value is None:
                continue
            if name == "preload_contexts":
                merged = dict(values.get(name) or {})
                merged.update(value)
                value = merged
            values[name] = value
        return cls(**values)

    def to_environ(self) -> dict[str, str]:
        """These settings as CITYOPS_* variables, for processes started with them (server workers)."""
        environ = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "preload_contexts":
                value = ",".join(f"{url}={path}" for url, path in value.items())
            environ[spec.metadata["env"]] = str(value)
        return environ

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, help) for every setting: the source of docs/configuration.md."""
        rows = []
        for spec in dataclasses.fields(cls):
            default = spec.default if spec.default is not None else ""
            rows.append((spec.metadata["env"], str(default), spec.metadata["help"]))
        return rows


def configuration_markdown() -> str:
    """The text of docs/configuration.md (a test keeps the file equal to this)."""
    lines = [
        "# Configuration",
        "",
        "Every setting comes from, in order of precedence: a CLI flag of `cityops serve` (where one exists),",
        "an environment variable, the default. `cityops settings` prints the values in effect.",
        "This file is generated from `src/cityops/settings.py` (`python -m cityops.settings > docs/configuration.md`).",
        "",
        "| environment variable | default | meaning |",
        "|---|---|---|",
    ]
    for env, default, meaning in Settings.describe():
        lines.append(f"| `{env}` | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(configuration_markdown(), end="")
