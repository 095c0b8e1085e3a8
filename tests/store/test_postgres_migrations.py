"""PostgreSQL schema migrations: applied once, in order, however many processes start at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from cityops.store.postgres_connection import connect
from cityops.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from conftest import _admin, _database_url, _make_template


@pytest.fixture(autouse=True)
def postgres_server() -> None:
    _make_template()  # skips (or in CI fails) when no PostgreSQL server answers


def test_migrations_from_several_processes_at_once_apply_each_once() -> None:
    name = "cityops_test_migrations"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    url = _database_url(name)
    try:

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
        again = subprocess.run([sys.executable, "-m", "cityops", "db", "migrate", "--database", url], capture_output=True, text=True)
        assert again.returncode == 0 and f"already at schema version {SCHEMA_VERSION}" in " ".join(again.stdout.split())
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_database_from_a_newer_cityops_is_refused_with_a_clear_message() -> None:
    name = "cityops_test_newer"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    url = _database_url(name)
    try:

        async def scenario() -> None:
            connection = await asyncpg.connect(url)
            try:
                await migrate(connection)
                await connection.execute("INSERT INTO cityops_migrations (version, description) VALUES ($1, 'from the future')", SCHEMA_VERSION + 1)
            finally:
                await connection.close()

        asyncio.run(scenario())
        result = subprocess.run([sys.executable, "-m", "cityops", "db", "migrate", "--database", url], capture_output=True, text=True)
        assert result.returncode == 1
        said = " ".join(result.stdout.split())
        assert f"schema version {SCHEMA_VERSION + 1}" in said and "Upgrade CityOps" in said
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
