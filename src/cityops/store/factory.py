"""The store a process uses, as the settings choose: SQLite (the embedded default) or PostgreSQL."""

from __future__ import annotations

from ..settings import Settings
from .contract import Store
from .postgres import PostgresStore
from .sqlite import SQLiteStore


def store_for(settings: Settings) -> Store:
    url = settings.postgres_url
    if url is not None:
        return PostgresStore(url, pool_size=settings.db_pool_size, timeout=settings.db_timeout)
    return SQLiteStore(
        settings.database,
        synchronous=settings.sqlite_synchronous,
        cache_mb=settings.sqlite_cache_mb,
        max_tenants=settings.max_tenants,
    )
