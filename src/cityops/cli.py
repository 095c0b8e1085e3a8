"""The ``cityops`` command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .settings import Settings, SettingsError, parse_preload_contexts
from .store.postgres_connection import redacted

app = typer.Typer(
    name="cityops",
    help=(
        "CityOps, an open smart-city integrated platform.\n\n"
        "It keeps everything a city knows as NGSI-LD entities with history, and serves the NGSI-LD API "
        "on port 1026 like other context brokers. Settings come from flags, then CITYOPS_* environment "
        "variables, then defaults: see 'cityops settings'."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
console = Console()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings.load(**overrides)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _preload(values: list[str] | None) -> dict[str, Path] | None:
    if not values:
        return None
    try:
        return parse_preload_contexts(",".join(values))
    except ValueError as exc:
        console.print(f"[red]--preload-context:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on [env CITYOPS_HOST, default 127.0.0.1]."),
    port: int | None = typer.Option(None, help="Port to listen on [env CITYOPS_PORT, default 1026]."),
    database: str | None = typer.Option(
        None,
        "--database",
        "-d",
        help="SQLite file for the hub's data, or a PostgreSQL URL postgresql://user:password@host/name "
        "[env CITYOPS_DATABASE or CITYOPS_DATABASE_URL, default cityops.db].",
    ),
    log_level: str | None = typer.Option(None, help="debug, info, warning or error [env CITYOPS_LOG_LEVEL]."),
    workers: int | None = typer.Option(
        None, help="Server processes sharing the port and the database [env CITYOPS_WORKERS, default 1]."
    ),
    preload_context: list[str] | None = typer.Option(
        None,
        "--preload-context",
        help="Serve the @context at URL from FILE instead of fetching it: URL=FILE, repeatable "
        "[env CITYOPS_PRELOAD_CONTEXTS, comma-separated].",
    ),
    mqtt_url: str | None = typer.Option(
        None, help="MQTT broker the IoT gateway reads device measures from, mqtt://host:1883 [env CITYOPS_MQTT_URL; default none]."
    ),
) -> None:
    """Run the hub: the NGSI-LD API and the IoT gateway over HTTP (and MQTT with --mqtt-url), until interrupted."""
    settings = load_settings(
        host=host, port=port, database=database, log_level=log_level, workers=workers,
        preload_contexts=_preload(preload_context), mqtt_url=mqtt_url,
    )  # fmt: skip
    run_server(settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from .api.app import create_app

    configure_logging(settings.log_level)
    options = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower() if settings.log_level.lower() != "info" else "warning",
        access_log=False,
        lifespan="on",
    )
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Each worker process builds its own app from the same settings, passed in the environment.
    os.environ.update(settings.to_environ())
    logging.getLogger("cityops").info("starting %d server processes on port %d", settings.workers, settings.port)
    uvicorn.run("cityops.api.app:create_app", factory=True, workers=settings.workers, **options)


@app.command()
def demo(
    database: str | None = typer.Option(
        None, "--database", "-d", help="Where to keep the demo's data [default var/demo.db, recreated each run]."
    ),
    port: int | None = typer.Option(None, help="Port to listen on [default 1026]."),
    keep: bool = typer.Option(False, help="Keep an existing demo database instead of starting fresh."),
) -> None:
    """Start a hub on a fresh SQLite file with real-looking entities of Anyang-si, and print URLs to try."""
    from .demo.anyang import prepare_demo

    settings = load_settings(database=database or "var/demo.db", port=port)
    configure_logging(settings.log_level)
    try:
        prepare_demo(settings, fresh=not keep, console=console)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    run_server(settings)


@app.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable, default and current value."""
    current = load_settings()
    table = Table(title="CityOps settings (flag > environment > default)")
    table.add_column("environment variable")
    table.add_column("default")
    table.add_column("current")
    table.add_column("meaning")
    for (env, default, meaning), name in zip(Settings.describe(), Settings.__dataclass_fields__):
        value = str(getattr(current, name))
        table.add_row(env, default, redacted(value) if name in ("database", "database_url") else value, meaning)
    console.print(table)


db = typer.Typer(help="The database: schema migrations.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db, name="db")


@db.command("migrate")
def db_migrate(
    database: str | None = typer.Option(
        None, "--database", "-d", help="PostgreSQL URL [env CITYOPS_DATABASE_URL or CITYOPS_DATABASE]."
    ),
) -> None:
    """Bring a PostgreSQL database's schema up to this version of CityOps (also done by 'serve' at
    start-up). Safe to run twice and while servers run; prints the migrations applied."""
    import asyncio

    from .store.postgres_schema import SCHEMA_VERSION, SchemaTooNew, migrate_database

    settings = load_settings(database=database)
    url = settings.postgres_url
    if url is None:
        console.print("[red]cityops db migrate needs a PostgreSQL database[/red] (--database postgresql://… or CITYOPS_DATABASE_URL); "
                      "SQLite files are laid out when first opened.")
        raise typer.Exit(2)

    try:
        applied = asyncio.run(migrate_database(url, timeout=settings.db_timeout))
    except (OSError, SchemaTooNew, TimeoutError) as exc:
        console.print(f"[red]migration failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if applied:
        console.print(f"{redacted(url)}: applied migration(s) {', '.join(map(str, applied))}; schema version {SCHEMA_VERSION}")
    else:
        console.print(f"{redacted(url)}: already at schema version {SCHEMA_VERSION}; nothing to do")


devices = typer.Typer(help="IoT devices: provisioning in bulk.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(devices, name="devices")


@devices.command("import")
def devices_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV file with a header row; see below."),
    url: str = typer.Option("http://127.0.0.1:1026", help="The CityOps server to provision on."),
    service: str = typer.Option("", help="fiware-service (the tenant) of the devices [default: the default tenant]."),
    service_path: str = typer.Option("/", help="fiware-servicepath of the devices (becomes their entities' scope)."),
    chunk: int = typer.Option(500, min=1, max=1000, help="Devices a request."),
) -> None:
    """Provision the devices a CSV file lists, through the server's /iot/devices API, with a
    progress bar; then report the rows that were refused and why.

    Columns: device_id (required), entity_name, entity_type, apikey, protocol, transport, endpoint,
    timeout; static:<name> for a static attribute; latitude/longitude (or lat/lon) for a fixed
    location. Exits with 1 when any row was refused."""
    import httpx
    from rich.progress import Progress

    from .ingest.csv_import import read_devices
    from .ingest.provisioning import ProvisioningError

    try:
        rows, refused, total = read_devices(file, service_path)
    except (ProvisioningError, UnicodeDecodeError) as exc:
        console.print(f"[red]cannot read {file}:[/red] {getattr(exc, 'detail', exc)}")
        raise typer.Exit(2) from None
    headers = {"fiware-service": service, "fiware-servicepath": service_path}
    created = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client, Progress(console=console) as progress:
        task = progress.add_task(f"provisioning {len(rows)} devices", total=len(rows))

        def post(batch: list) -> httpx.Response:
            return client.post("/iot/devices", json={"devices": [row.body for row in batch]})

        try:
            for start in range(0, len(rows), chunk):
                batch = rows[start : start + chunk]
                response = post(batch)
                if response.status_code == 201:
                    created += len(batch)
                elif response.status_code < 500:  # one row spoils a request: find which, one by one
                    for row in batch:
                        single = post([row])
                        if single.status_code == 201:
                            created += 1
                        else:
                            refused.append((row.line, _problem_detail(single)))
                else:
                    console.print(f"[red]the server failed ({response.status_code}):[/red] {_problem_detail(response)}")
                    raise typer.Exit(1)
                progress.advance(task, len(batch))
        except httpx.HTTPError as exc:
            console.print(f"[red]cannot reach {url}:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"{file}: {total} rows, {created} devices provisioned, {len(refused)} refused")
    if refused:
        for line, reason in sorted(refused):
            console.print(f"  line {line}: {reason}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _problem_detail(response: object) -> str:
    try:
        return str(response.json().get("detail"))  # type: ignore[attr-defined]
    except ValueError:
        return response.text[:200]  # type: ignore[attr-defined]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
