"""SQLite storage: the schema, one connection, and one transaction per request.

The server is small enough that a single connection guarded by one lock is both the simplest and
the fastest choice: SQLite serialises writers anyway, and every request's work is one transaction,
so a failed request leaves no half-written record.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Database", "dumps", "loads", "now_iso"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owners(
    key TEXT PRIMARY KEY, display_name TEXT NOT NULL, created TEXT NOT NULL,
    content_access_mode TEXT NOT NULL DEFAULT 'entitlement',
    content_access_mode_list TEXT NOT NULL DEFAULT 'entitlement,org_environment', updated TEXT,
    identity_window REAL);
CREATE TABLE IF NOT EXISTS users(
    username TEXT PRIMARY KEY, salt TEXT NOT NULL, pw_hash TEXT NOT NULL, superadmin INTEGER NOT NULL,
    owner TEXT, role TEXT NOT NULL DEFAULT 'admin');
CREATE TABLE IF NOT EXISTS serials(
    serial INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consumers(
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT REFERENCES owners(key),
    type TEXT NOT NULL,
    facts TEXT NOT NULL DEFAULT '{}',
    installed_products TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    last_checkin TEXT,
    cert_pem TEXT,
    cert_serial INTEGER,
    cert_expiration TEXT,
    key_pem TEXT,
    public_key_pem TEXT,
    hypervisor_id TEXT,
    reporter_id TEXT,
    guest_key TEXT,
    instance_uuid TEXT,
    ft_role INTEGER,
    failed_over_to TEXT,
    failed_over_at TEXT,
    reported_owner TEXT,
    guests_digest TEXT,
    departed_at TEXT,
    release_ver TEXT,
    service_level TEXT,
    autoheal INTEGER NOT NULL DEFAULT 1,
    role TEXT,
    usage TEXT,
    addons TEXT,
    service_type TEXT,
    environments TEXT,
    renewed_from_serial INTEGER
);
CREATE INDEX IF NOT EXISTS consumers_owner ON consumers(owner);
CREATE UNIQUE INDEX IF NOT EXISTS consumers_hypervisor ON consumers(owner, hypervisor_id);
CREATE INDEX IF NOT EXISTS consumers_guest ON consumers(guest_key);
CREATE TABLE IF NOT EXISTS deleted_consumers(
    uuid TEXT PRIMARY KEY, owner TEXT, name TEXT, deleted TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guests(
    hypervisor TEXT NOT NULL REFERENCES consumers(uuid) ON DELETE CASCADE,
    guest_key TEXT NOT NULL,
    instance_key TEXT NOT NULL DEFAULT '',
    guest_id TEXT NOT NULL,
    state INTEGER,
    attributes TEXT NOT NULL DEFAULT '{}',
    updated TEXT NOT NULL,
    PRIMARY KEY(hypervisor, guest_key, instance_key)
);
CREATE INDEX IF NOT EXISTS guests_key ON guests(guest_key);
CREATE INDEX IF NOT EXISTS guests_instance ON guests(instance_key) WHERE instance_key != '';
CREATE TABLE IF NOT EXISTS ft_tombstones(
    reported_owner TEXT NOT NULL, guest_key TEXT NOT NULL, created TEXT NOT NULL,
    PRIMARY KEY(reported_owner, guest_key));
CREATE TABLE IF NOT EXISTS server_jobs(
    id TEXT PRIMARY KEY, key TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS products(
    owner TEXT NOT NULL REFERENCES owners(key), id TEXT NOT NULL, name TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}', provided TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY(owner, id));
CREATE TABLE IF NOT EXISTS product_content(
    owner TEXT NOT NULL, product_id TEXT NOT NULL, content TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY(owner, product_id));
CREATE TABLE IF NOT EXISTS job_principals(job_id TEXT PRIMARY KEY, principal TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pools(
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES owners(key),
    product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    source_entitlement TEXT,
    requires_host TEXT,
    hypervisor_id TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    start_date TEXT NOT NULL,
    end_date TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pools_owner ON pools(owner);
CREATE INDEX IF NOT EXISTS pools_host ON pools(requires_host);
CREATE TABLE IF NOT EXISTS activation_keys(
    id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES owners(key), name TEXT NOT NULL,
    auto_attach INTEGER NOT NULL DEFAULT 0, UNIQUE(owner, name));
CREATE TABLE IF NOT EXISTS activation_key_pools(
    key_id TEXT NOT NULL REFERENCES activation_keys(id) ON DELETE CASCADE,
    pool_id TEXT NOT NULL, quantity INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS entitlements(
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    pool TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entitlements_consumer ON entitlements(consumer);
CREATE INDEX IF NOT EXISTS entitlements_pool ON entitlements(pool);
CREATE TABLE IF NOT EXISTS certificates(
    serial INTEGER PRIMARY KEY,
    entitlement TEXT NOT NULL,
    consumer TEXT NOT NULL,
    cert TEXT NOT NULL,
    key TEXT NOT NULL,
    expiration TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_consumer ON certificates(consumer);
CREATE INDEX IF NOT EXISTS certificates_entitlement ON certificates(entitlement);
CREATE TABLE IF NOT EXISTS jobs(
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    reporter_id TEXT,
    state TEXT NOT NULL,
    payload TEXT,
    result TEXT,
    message TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reporters(
    owner TEXT NOT NULL, reporter_id TEXT NOT NULL, last_seen TEXT NOT NULL,
    PRIMARY KEY(owner, reporter_id));
CREATE TABLE IF NOT EXISTS leases(
    group_key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    consumer TEXT NOT NULL,
    generation INTEGER NOT NULL,
    ttl REAL NOT NULL,
    granted REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_log(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key TEXT NOT NULL,
    holder TEXT NOT NULL,
    consumer TEXT NOT NULL,
    generation INTEGER NOT NULL,
    event TEXT NOT NULL,
    start REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lease_log_group ON lease_log(group_key);
CREATE TABLE IF NOT EXISTS shares(
    owner TEXT NOT NULL REFERENCES owners(key),
    recipient TEXT NOT NULL REFERENCES owners(key),
    created TEXT NOT NULL,
    PRIMARY KEY(owner, recipient));
CREATE INDEX IF NOT EXISTS shares_recipient ON shares(recipient);
CREATE TABLE IF NOT EXISTS content_access_certs(
    consumer TEXT PRIMARY KEY,
    serial INTEGER NOT NULL,
    cert TEXT NOT NULL,
    key TEXT NOT NULL,
    expiration TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS content_access_serial ON content_access_certs(serial);
CREATE TABLE IF NOT EXISTS content_overrides(
    consumer TEXT NOT NULL,
    label TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY(consumer, label, name)
);
CREATE TABLE IF NOT EXISTS environments(
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES owners(key),
    name TEXT NOT NULL,
    type TEXT,
    description TEXT,
    content_prefix TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    UNIQUE(owner, name)
);
CREATE TABLE IF NOT EXISTS environment_content(
    environment TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    content_id TEXT NOT NULL,
    enabled INTEGER,
    PRIMARY KEY(environment, content_id)
);
CREATE TABLE IF NOT EXISTS consumer_profiles(
    consumer TEXT NOT NULL,
    profile_type TEXT NOT NULL,
    profile TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY(consumer, profile_type)
);
CREATE INDEX IF NOT EXISTS leases_holder ON leases(holder);
CREATE INDEX IF NOT EXISTS leases_consumer ON leases(consumer);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    type TEXT NOT NULL,
    target TEXT NOT NULL,
    target_name TEXT,
    consumer TEXT,
    principal_type TEXT NOT NULL,
    principal_name TEXT NOT NULL,
    message TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_owner ON events(owner);
"""


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    if text is None:
        return default
    return json.loads(text)


class Database:
    """One SQLite connection shared by the server's threads, one transaction at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit acknowledged to a client survives power loss, not only a process kill.
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.lock = threading.RLock()
        with self.transaction() as db:
            db.executescript_in_tx(SCHEMA)
            _add_missing_columns(db)
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# Columns added after the first release: a database created earlier gains them on open.
# Orgs made before content access modes existed had entitlement-mode behaviour: they keep it.
_ADDED_COLUMNS = {"users": [("owner", "TEXT"), ("role", "TEXT NOT NULL DEFAULT 'admin'")],
                  "consumers": [("guests_digest", "TEXT"), ("departed_at", "TEXT"), ("release_ver", "TEXT"),
                                ("service_level", "TEXT"), ("autoheal", "INTEGER NOT NULL DEFAULT 1"), ("role", "TEXT"),
                                ("usage", "TEXT"), ("addons", "TEXT"), ("service_type", "TEXT"),
                                ("environments", "TEXT"), ("renewed_from_serial", "INTEGER")],
                  "owners": [("content_access_mode", "TEXT NOT NULL DEFAULT 'entitlement'"),
                             ("content_access_mode_list", "TEXT NOT NULL DEFAULT 'entitlement,org_environment'"),
                             ("updated", "TEXT"), ("identity_window", "REAL")]}


def _add_missing_columns(tx: Tx) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        present = {r["name"] for r in tx.all(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name not in present:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


class Tx:
    """The handle business logic gets inside a transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def executescript_in_tx(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def next_serial(self, kind: str) -> int:
        cur = self.conn.execute("INSERT INTO serials(kind, created) VALUES(?, ?)", (kind, now_iso()))
        assert cur.lastrowid is not None
        return cur.lastrowid
