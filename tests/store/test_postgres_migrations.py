"""PostgreSQL schema migrations: applied once, in order, however many processes start at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from cityops.store.postgres_connection import connect
from cityops.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from conftest import postgres_database


def cityops_db_migrate(url: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "cityops", "db", "migrate", "--database", url], capture_output=True, text=True)
    result.stdout = " ".join(result.stdout.split())  # rich wraps lines to the terminal's width
    return result


def test_migrations_from_several_processes_at_once_apply_each_once() -> None:
    with postgres_database(migrated=False) as url:

        async def scenario() -> tuple[list[list[int]], list[int]]:
            connections = [await connect(url) for _ in range(4)]
            try:
                applied = await asyncio.gather(*(migrate(c) for c in connections))
                recorded = [row[0] for row in await connections[0].fetch("SELECT version FROM cityops_migrations ORDER BY version")]
                return applied, recorded
            finally:
                for c in connections:
                    await c.close()

        applied, recorded = asyncio.run(scenario())
        assert sorted(v for versions in applied for v in versions) == [m.version for m in MIGRATIONS]  # each once, by one of them
        assert recorded == [m.version for m in MIGRATIONS]
        again = cityops_db_migrate(url)
        assert again.returncode == 0 and f"already at schema version {SCHEMA_VERSION}" in again.stdout


def test_a_database_from_a_newer_cityops_is_refused_with_a_clear_message() -> None:
    with postgres_database() as url:

        async def from_the_future() -> None:
            connection = await connect(url)
            try:
                await connection.execute("INSERT INTO cityops_migrations (version, description) VALUES ($1, 'from the future')", SCHEMA_VERSION + 1)
            finally:
                await connection.close()

        asyncio.run(from_the_future())
        result = cityops_db_migrate(url)
        assert result.returncode == 1
        assert f"schema version {SCHEMA_VERSION + 1}" in result.stdout and "Upgrade CityOps" in result.stdout
