"""Engine and session factories, and Alembic migrations run from code.

Nothing connects at import: the server and the evolver call these at startup.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ecosystem.errors import EcosystemError

MIGRATIONS = Path(__file__).parent / "migrations"

# How long a SQLite writer waits for the other process's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout so two processes can share it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Per SQLAlchemy's SQLite docs ("Serializable isolation / Savepoints / Transactional DDL"):
    # stop pysqlite from issuing BEGIN itself, so transactions, SAVEPOINTs and DDL behave as on PostgreSQL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor the writer them
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a power cut may lose the last commits
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite leaves them off unless asked, per connection
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def begin_write(session: Session) -> None:
    """Start ``session``'s transaction as a writer; call it before the transaction's first query.

    On SQLite a plain (deferred) transaction that has read cannot become a writer once another process
    has committed since: it fails at once with "database is locked". BEGIN IMMEDIATE takes the write
    lock up front, waiting up to the busy timeout. On PostgreSQL this is a no-op.
    """
    session.connection(execution_options={"sqlite_immediate": True})


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped inside this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest), in one transaction."""
    engine = make_engine(url)
    try:
        with migration_connection(engine) as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction, fit for running migrations; commits on success."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy and drop tables; with foreign keys on, dropping a parent table would
            # cascade into its children (Alembic docs, "Dealing with Constraints"). The pragma only takes
            # effect outside a transaction, so it goes to the raw connection before BEGIN.
            _pragma(connection, "foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise EcosystemError("migration left rows whose foreign keys point nowhere; rolled back")
        finally:
            if sqlite:
                _pragma(connection, "foreign_keys=ON")


def _pragma(connection: Connection, pragma: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()
    cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
